// Manual face placement: when the server finds no face in a portrait (a noisy sketch, a
// stylised painting), the user clicks five points on it and the upload is sent again with them.
// Points are in the image's own pixels (the browser shows it EXIF-rotated, as the server reads it).

export const STEPS = [
  ["right_eye", "the centre of the subject's right eye (on your left for a frontal face)"],
  ["left_eye", "the centre of the subject's left eye"],
  ["nose", "the tip of the nose"],
  ["mouth_right", "the mouth corner on the subject's right (your left)"],
  ["mouth_left", "the other mouth corner"],
];

// Show `file` in the #place section and collect the five clicks; resolves with
// {right_eye: [x, y], ...} or null if the user cancels.
export function placeFace(file) {
  const box = document.getElementById("place");
  const img = document.getElementById("place-img");
  const marks = document.getElementById("place-marks");
  const prompt = document.getElementById("place-prompt");
  const url = URL.createObjectURL(file);
  const points = [];
  img.src = url;
  marks.replaceChildren();
  box.hidden = false;

  const show = () => {
    prompt.textContent = points.length < STEPS.length
      ? `Click ${STEPS[points.length][1]} (${points.length + 1} of ${STEPS.length}).`
      : "Done.";
    document.getElementById("place-undo").disabled = points.length === 0;
  };
  const mark = (x, y, i) => {
    const dot = document.createElement("span");
    dot.className = "mark";
    dot.textContent = String(i + 1);
    dot.style.left = `${(100 * x) / img.naturalWidth}%`;
    dot.style.top = `${(100 * y) / img.naturalHeight}%`;
    marks.append(dot);
  };
  show();

  return new Promise((resolve) => {
    const finish = (result) => {
      img.removeEventListener("click", onClick);
      document.getElementById("place-undo").onclick = null;
      document.getElementById("place-cancel").onclick = null;
      box.hidden = true;
      URL.revokeObjectURL(url);
      resolve(result);
    };
    const onClick = (e) => {
      const r = img.getBoundingClientRect();
      const x = ((e.clientX - r.left) * img.naturalWidth) / r.width;
      const y = ((e.clientY - r.top) * img.naturalHeight) / r.height;
      mark(x, y, points.length);
      points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
      show();
      if (points.length === STEPS.length) {
        finish(Object.fromEntries(STEPS.map(([name], i) => [name, points[i]])));
      }
    };
    img.addEventListener("click", onClick);
    document.getElementById("place-undo").onclick = () => {
      points.pop();
      marks.lastChild?.remove();
      show();
    };
    document.getElementById("place-cancel").onclick = () => finish(null);
  });
}
