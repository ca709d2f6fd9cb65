// Refreshing a part of the page after live events without reloading it once per event.

/**
 * A refresh of `load` (async) to call as `refresh()` (now) or `refresh({ soon: true })` (once a burst
 * of events has settled for `settleMs`: at most one load waits). A failed load now goes to `onError`;
 * a settled one is quiet (the next event or the periodic refresh tries again).
 */
export function settledRefresh(load, settleMs, onError = () => {}) {
  let timer = null;
  return ({ soon = false } = {}) => {
    if (soon) {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        load().catch(() => {});
      }, settleMs);
      return;
    }
    load().catch(onError);
  };
}
