// The page's CSV writer (format.js toCsv): spreadsheet formulas neutralised, one line per row.
import assert from "node:assert/strict";
import { test } from "node:test";
import { toCsv } from "../../../dashboard/frontend/src/js/format.js";

const parseLines = (text) => text.split("\r\n").filter((line) => line !== "");

test("text cells starting a formula are prefixed with a quote, also after whitespace", () => {
  const text = toCsv(["a"], [["=1+2"], ["+1"], ["-1+2"], ["@SUM(A1)"], ["  =1"], ["\t=1"], ["plain"]]);
  assert.deepEqual(parseLines(text), ["a", "'=1+2", "'+1", "'-1+2", "'@SUM(A1)", "'  =1", "'\t=1", "plain"]);
});

test("a CR or LF inside a cell never starts a new row", () => {
  const text = toCsv(["meter_id", "kwh"], [["M7\r=cmd|' /C calc'!A0", 1], ["M8\n@x", 2]]);
  const lines = parseLines(text);
  assert.equal(lines.length, 3, JSON.stringify(lines));
  assert.ok(lines.every((line) => !/^[=+\-@]/.test(line)));
});

test("numbers are left alone, negative ones too", () => {
  assert.deepEqual(parseLines(toCsv(["x", "y"], [[-1.5, 0], [null, undefined]])), ["x,y", "-1.5,0", ","]);
});
