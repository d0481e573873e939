// Drag and drop of files onto an element: highlights it while files hover, hands the dropped
// files to `onFiles`.
export function acceptDrops(element, onFiles) {
  element.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    element.classList.add("over");
  });
  element.addEventListener("dragleave", () => element.classList.remove("over"));
  element.addEventListener("drop", (ev) => {
    ev.preventDefault();
    element.classList.remove("over");
    onFiles(ev.dataTransfer.files);
  });
}
