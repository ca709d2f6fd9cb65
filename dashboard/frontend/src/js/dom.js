// Building page elements from data without HTML parsing: every value becomes a text node or an
// attribute value, so a meter id such as `"><img src=x onerror=...>` is shown as the text it is.

/**
 * A new element. `attrs`: attribute name to value (null/false left out, true as an empty attribute);
 * `className` and `dataset` ({key: value}) are set as properties. `children`: nodes or text.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.entries(value).forEach(([k, v]) => { node.dataset[k] = String(v); });
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An <option> with `text` shown and `value` submitted, both as plain text. */
export function option(value, text = value) {
  return new Option(String(text), String(value));
}
