// settledRefresh (refresh.js): a burst of events makes one load once it settles; "now" loads at once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { settledRefresh } from "../../../dashboard/frontend/src/js/refresh.js";

const settle = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("a burst of soon refreshes loads once, after it settles", async () => {
  let loads = 0;
  const refresh = settledRefresh(async () => { loads += 1; }, 20);
  for (let i = 0; i < 10; i += 1) refresh({ soon: true });
  assert.equal(loads, 0);
  await settle(60);
  assert.equal(loads, 1);
  refresh({ soon: true });
  await settle(60);
  assert.equal(loads, 2);
});

test("a refresh now loads at once and reports its failure; a settled one stays quiet", async () => {
  const errors = [];
  const refresh = settledRefresh(async () => { throw new Error("away"); }, 5, (error) => errors.push(error.message));
  refresh();
  await settle(10);
  assert.deepEqual(errors, ["away"]);
  refresh({ soon: true });
  await settle(30);
  assert.deepEqual(errors, ["away"]);
});
