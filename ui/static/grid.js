// The photo grid and its large view (ui/grid.py mounts this as one Streamlit component).
// Every value from a photo file is set with textContent or as an attribute, never as HTML.

const ICONS = {
  like: "M15.5 14h-.79l-.28-.27A6.47 6.47 0 0 0 16 9.5 6.5 6.5 0 1 0 9.5 16c1.61 0 3.09-.59 4.23-1.57l.27.28v.79l5 " +
    "4.99L20.49 19l-4.99-5zm-6 0C7.01 14 5 11.99 5 9.5S7.01 5 9.5 5 14 7.01 14 9.5 11.99 14 9.5 14z",
  prev: "M15.41 7.41 14 6l-6 6 6 6 1.41-1.41L10.83 12z",
  next: "M10 6 8.59 7.41 13.17 12l-4.58 4.59L10 18l6-6z",
  close: "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 19 17.59 13.41 12z",
  broken: "M21 5v6.59l-3-3.01-4 4.01-4-4-4 4-3-3.01V5c0-1.1.9-2 2-2h14c1.1 0 2 .9 2 2zm-3 6.42 3 3.01V19c0 1.1-.9 " +
    "2-2 2H5c-1.1 0-2-.9-2-2v-6.58l3 2.99 4-4 4 4 4-3.99z",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.appendChild(path);
  return svg;
}

function iconButton(name, label, className) {
  const button = el("button", className);
  button.type = "button";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.appendChild(icon(name));
  return button;
}

function quietLine(photo) {
  return [photo.score, photo.date].filter(Boolean).join(" · ");
}

function tile(photo, index, open, like) {
  const item = el("div", "tile");
  item.tabIndex = 0;
  item.dataset.id = photo.id;
  item.setAttribute("role", "button");
  item.setAttribute("aria-label", photo.name);
  item.title = photo.name;
  const img = el("img");
  img.alt = photo.name;
  img.decoding = "async";
  img.src = photo.thumb;
  img.addEventListener("error", () => {
    item.classList.add("broken");
    img.remove();
    item.prepend(icon("broken"));
  });
  item.appendChild(img);
  const caption = el("div", "caption");
  caption.appendChild(el("span", "name", photo.name));
  const line = quietLine(photo);
  if (line) caption.appendChild(el("span", "meta", line));
  item.appendChild(caption);
  if (like) {
    const button = iconButton("like", "More like this", "like");
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      like(photo.id);
    });
    item.appendChild(button);
  }
  item.addEventListener("click", () => open(index));
  item.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open(index);
    }
  });
  return item;
}

function detailRows(photo) {
  const rows = [["Taken", photo.date || "unknown"]];
  if (photo.camera) rows.push(["Camera", photo.camera]);
  if (photo.dims) rows.push(["Size", photo.dims]);
  if (photo.place) rows.push(["Place", photo.place]);
  rows.push(["Folder", photo.folder]);
  if (photo.score) rows.push(["Match", photo.score]);
  if (photo.words) rows.push(["Words", photo.words]);
  return rows;
}

function viewer(photos, like, pickTag, mark) {
  const box = el("div", "viewer");
  box.hidden = true;
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-modal", "true");
  const stage = el("div", "stage");
  const img = el("img", "large");
  stage.appendChild(img);
  const about = el("aside", "about");
  const prev = iconButton("prev", "Previous photo", "nav prev");
  const next = iconButton("next", "Next photo", "nav next");
  const close = iconButton("close", "Close", "close");
  box.append(stage, prev, next, close, about);
  let current = -1;

  function show(index) {
    current = (index + photos.length) % photos.length;
    const photo = photos[current];
    img.src = photo.large;
    img.alt = photo.name;
    box.dataset.id = photo.id;
    about.replaceChildren(el("h3", "title", photo.name));
    const list = el("dl");
    for (const [key, value] of detailRows(photo)) {
      list.append(el("dt", null, key), el("dd", null, value));
    }
    about.appendChild(list);
    if (photo.tags.length) {
      const tags = el("div", "tags");
      for (const label of photo.tags) {
        const chip = el("button", "chip", label);
        chip.type = "button";
        chip.title = "Only photos tagged " + label;
        chip.addEventListener("click", () => pickTag(label));
        tags.appendChild(chip);
      }
      about.appendChild(tags);
    }
    if (like) {
      const more = el("button", "more", "More like this");
      more.type = "button";
      more.prepend(icon("like"));
      more.addEventListener("click", () => like(photo.id));
      about.appendChild(more);
    }
    if (mark) {
      // Ticks the photo as an example of the concept being taught (the page's "Teach a concept").
      const sides = el("div", "marks");
      sides.appendChild(el("span", null, "Concept example:"));
      for (const [side, label] of [["yes", "Yes"], ["no", "No"]]) {
        const button = el("button", "chip mark-" + side, label);
        button.type = "button";
        button.title = side === "yes" ? "It shows the concept" : "It doesn't show the concept";
        button.addEventListener("click", () => mark({ id: photo.id, side }));
        sides.appendChild(button);
      }
      about.appendChild(sides);
    }
    about.appendChild(el("p", "path", photo.path));
    box.hidden = false;
    close.focus({ preventScroll: true });
  }

  function hide() {
    box.hidden = true;
    current = -1;
  }

  function onKey(event) {
    if (box.hidden) return;
    if (event.key === "ArrowRight") show(current + 1);
    else if (event.key === "ArrowLeft") show(current - 1);
    else if (event.key === "Escape") hide();
    else return;
    event.preventDefault();
    event.stopPropagation();
  }

  prev.addEventListener("click", () => show(current - 1));
  next.addEventListener("click", () => show(current + 1));
  close.addEventListener("click", hide);
  box.addEventListener("click", (event) => {
    if (event.target === box || event.target === stage) hide();
  });
  return { box, show, onKey };
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const photos = data.photos;
  const like = data.likeable ? (id) => setTriggerValue("like", id) : null;
  const pickTag = (label) => setTriggerValue("tag", label);
  const mark = data.markable ? (value) => setTriggerValue("mark", value) : null;
  const root = el("div", "pixseek-grid");
  const view = viewer(photos, like, pickTag, mark);
  const grid = el("div", "tiles");
  photos.forEach((photo, index) => grid.appendChild(tile(photo, index, view.show, like)));
  root.append(grid, view.box);
  parentElement.querySelector(".pixseek-grid")?.remove(); // a rerun draws new results in place
  parentElement.appendChild(root);
  document.addEventListener("keydown", view.onKey, true);
  return () => document.removeEventListener("keydown", view.onKey, true);
}
