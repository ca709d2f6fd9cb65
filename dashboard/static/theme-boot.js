// Runs before first paint (classic script in <head>): pick the remembered theme, else the system's.
(function () {
  var theme = null;
  try { theme = localStorage.getItem("wattsup-theme"); } catch (e) { /* storage blocked */ }
  if (theme !== "dark" && theme !== "light") {
    theme = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  document.documentElement.setAttribute("data-theme", theme);
})();
