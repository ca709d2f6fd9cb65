// Builds the page into ../static: app.js (+ a lazily loaded chunk for the PDF report), app.css,
// index.html, theme-boot.js. Everything the page loads is served by the dashboard service.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: join(here, "src", "js", "main.js") },
  outdir: out,
  bundle: true,
  format: "esm",
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  minify: true,
  target: ["chrome100", "firefox100", "safari15"],
  legalComments: "linked",
  // jsPDF imports these only for doc.html() and SVG, which the report does not use.
  external: ["html2canvas", "dompurify", "canvg"],
  logLevel: "warning",
});
for (const file of ["index.html", "app.css", "theme-boot.js"]) copyFileSync(join(here, "src", file), join(out, file));
console.log(`built ${readdirSync(out, { recursive: true }).length} files into ${out}`);
