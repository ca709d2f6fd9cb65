// Dark/light theme: remembered per browser in localStorage; the first visit follows the system
// (theme-boot.js sets the attribute before the first paint; this module handles the toggle).
const STORAGE_KEY = "wattsup-theme";
const listeners = [];

export function currentTheme() {
  return document.documentElement.getAttribute("data-theme") === "dark" ? "dark" : "light";
}

function label(button) {
  const dark = currentTheme() === "dark";
  // Inline SVG icons: emoji fonts are not on every machine, and the page loads no web fonts.
  // The only innerHTML of the page: constant markup written here, never data.
  button.innerHTML = dark
    ? '<svg class="theme-icon" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="5"/><path d="M11 1h2v4h-2zM11 19h2v4h-2zM1 11h4v2H1zM19 11h4v2h-4zM4.2 5.6l1.4-1.4 2.8 2.8-1.4 1.4zM15.6 17l1.4-1.4 2.8 2.8-1.4 1.4zM4.2 18.4l2.8-2.8 1.4 1.4-2.8 2.8zM15.6 7l2.8-2.8 1.4 1.4L17 8.4z"/></svg> Light'
    : '<svg class="theme-icon" viewBox="0 0 24 24" aria-hidden="true"><path d="M20.5 14.5A8.5 8.5 0 0 1 9.5 3.5a8.5 8.5 0 1 0 11 11z"/></svg> Dark';
  button.setAttribute("aria-label", dark ? "Switch to light mode" : "Switch to dark mode");
  button.setAttribute("aria-pressed", String(dark));
}

export function setTheme(theme) {
  document.documentElement.setAttribute("data-theme", theme);
  try {
    localStorage.setItem(STORAGE_KEY, theme);
  } catch {
    /* storage blocked: the choice lasts for this page only */
  }
  listeners.forEach((fn) => fn(theme));
}

export function onThemeChange(fn) {
  listeners.push(fn);
}

export function initThemeToggle(button) {
  label(button);
  button.addEventListener("click", () => {
    setTheme(currentTheme() === "dark" ? "light" : "dark");
    label(button);
  });
}
