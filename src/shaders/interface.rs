//! A shader module's resource interface read from its WGSL text: which bindings it declares and
//! which each entry point uses. naga does this analysis for wgpu's automatic layouts; it is not
//! linked for it here because it would add about 700 KiB (half again) to the browser's wasm,
//! where the browser compiles the WGSL. `tests/shaders.rs` checks this reading against naga's
//! for every entry point of every shader.

use std::collections::{HashMap, HashSet};

/// A shader module's resource interface: every `@binding(N) var<...> name` of group 0, and the
/// bindings each entry point uses, which are the entries of its pipeline's automatic layout (wgpu
/// makes that layout from the same naga analysis).
#[derive(Debug)]
pub struct ShaderInterface {
    bindings: Vec<(String, u32)>,
    /// Per entry point, the indices into `bindings` of those it uses.
    entry_points: HashMap<String, Vec<usize>>,
}

impl ShaderInterface {
    /// The interface of a whole module's source (constants and prelude included).
    pub(super) fn read(source: &str) -> ShaderInterface {
        let source = strip_comments(source);
        let bindings: Vec<(String, u32)> = bindings(&source)
            .into_iter()
            .map(|(name, number)| (name.to_string(), number))
            .collect();
        let functions = functions(&source);
        let entry_points = functions
            .iter()
            .filter(|f| f.entry_point)
            .map(|entry| {
                let names = reachable_names(entry, &functions);
                let used = (0..bindings.len())
                    .filter(|&i| names.contains(bindings[i].0.as_str()))
                    .collect();
                (entry.name.to_string(), used)
            })
            .collect();
        ShaderInterface { bindings, entry_points }
    }

    /// The binding number of the buffer `name`.
    pub fn binding(&self, name: &str) -> Option<u32> {
        self.bindings.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
    }

    /// Every binding: (name, number), in declaration order.
    pub fn bindings(&self) -> impl Iterator<Item = (&str, u32)> {
        self.bindings.iter().map(|(n, b)| (n.as_str(), *b))
    }

    /// The bindings `entry` uses (its pipeline layout's entries) as (name, number), or `None`
    /// for no such entry point.
    pub fn used_by(&self, entry: &str) -> Option<impl Iterator<Item = (&str, u32)>> {
        let used = self.entry_points.get(entry)?;
        Some(used.iter().map(|&i| (self.bindings[i].0.as_str(), self.bindings[i].1)))
    }
}

/// `src` with its `//` and `/* */` comments blanked out.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            let mut depth = 1;
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                let next = after[i + c.len_utf8()..].chars().next();
                match (c, next) {
                    ('/', Some('*')) => depth += 1,
                    ('*', Some('/')) => depth -= 1,
                    _ => continue,
                }
                chars.next();
                if depth == 0 {
                    end = i + 2;
                    break;
                }
            }
            out.push(' ');
            rest = &after[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A function of a WGSL module: its name, whether it is a `@compute` entry point, and the
/// identifiers its body names (member names after a `.` left out).
struct WgslFunction<'a> {
    name: &'a str,
    entry_point: bool,
    names: HashSet<&'a str>,
}

/// Every top-level function of a comment-free WGSL source.
fn functions(src: &str) -> Vec<WgslFunction<'_>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item_start = 0;
    let mut i = 0;
    let bytes = src.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    item_start = i + 1;
                }
            }
            b';' if depth == 0 => item_start = i + 1,
            _ if depth == 0 && bytes[i..].starts_with(b"fn ") && (i == 0 || !is_ident(bytes[i - 1])) => {
                let name = identifiers(&src[i + 3..]).next().map_or("", |id| id.name);
                let open = src[i..].find('{').map_or(src.len(), |o| i + o);
                let close = matching_brace(src, open);
                out.push(WgslFunction {
                    name,
                    entry_point: src[item_start..i].contains("@compute"),
                    names: free_names(&src[i..open], &src[open..close]),
                });
                i = close + 1;
                item_start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The identifiers a function's body names that are not its own: member names (after a `.`),
/// its parameters and its `let` / `var` / `const` locals left out (a local shadowing a global
/// hides it in the whole function here: an approximation the naga comparison test checks).
fn free_names<'a>(signature: &'a str, body: &'a str) -> HashSet<&'a str> {
    let params = signature.split_once('(').map_or("", |(_, r)| r);
    let mut own: HashSet<&str> = identifiers(params)
        .filter(|id| id.before_colon)
        .map(|id| id.name)
        .collect();
    let mut names = HashSet::new();
    let mut previous = "";
    for id in identifiers(body) {
        if matches!(previous, "let" | "var" | "const") {
            own.insert(id.name);
        } else if !id.after_dot {
            names.insert(id.name);
        }
        previous = id.name;
    }
    names.retain(|n| !own.contains(n));
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The index of the `}` closing the `{` at `open` (or the end of `src`).
fn matching_brace(src: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in src.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    src.len()
}

/// An identifier of a WGSL source, with whether a `.` precedes it (a member name) and a `:`
/// follows it (a parameter, member or typed declaration).
struct Identifier<'a> {
    name: &'a str,
    after_dot: bool,
    before_colon: bool,
}

/// The identifiers of `src`, in order.
fn identifiers(src: &str) -> impl Iterator<Item = Identifier<'_>> {
    let bytes = src.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if is_ident(bytes[i]) && !bytes[i].is_ascii_digit() && (i == 0 || !is_ident(bytes[i - 1])) {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                return Some(Identifier {
                    name: &src[start..i],
                    after_dot: src[..start].trim_end().ends_with('.'),
                    before_colon: src[i..].trim_start().starts_with(':'),
                });
            }
            i += 1;
        }
        None
    })
}

/// Every identifier named by `entry` or by a function it calls, directly or not.
fn reachable_names<'a>(entry: &WgslFunction<'a>, functions: &[WgslFunction<'a>]) -> HashSet<&'a str> {
    let mut names: HashSet<&str> = entry.names.clone();
    let mut visited: HashSet<&str> = HashSet::from([entry.name]);
    let mut queue: Vec<&WgslFunction> = vec![entry];
    while let Some(f) = queue.pop() {
        for callee in functions.iter().filter(|g| f.names.contains(g.name)) {
            if visited.insert(callee.name) {
                names.extend(callee.names.iter().copied());
                queue.push(callee);
            }
        }
    }
    names
}

/// Every `@binding(N) var<...> name` declaration of a WGSL source, as (name, N).
fn bindings(src: &str) -> Vec<(&str, u32)> {
    let mut out = Vec::new();
    for line in src.lines() {
        let Some(at) = line.find("@binding(") else { continue };
        let rest = &line[at + "@binding(".len()..];
        let Some((number, rest)) = rest.split_once(')') else {
            continue;
        };
        let Ok(number) = number.trim().parse() else { continue };
        let Some((_, rest)) = rest.split_once("var") else {
            continue;
        };
        // Skip the address space (`<storage, read>`), if any, then take the name.
        let rest = match rest.trim_start().strip_prefix('<') {
            Some(r) => r.split_once('>').map_or("", |(_, r)| r),
            None => rest,
        };
        let name = rest
            .trim_start()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next();
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.push((name, number));
        }
    }
    out
}
