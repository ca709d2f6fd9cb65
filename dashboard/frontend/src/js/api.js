// The one place the page talks to the service (/api/v1, same origin, session cookie).

export const API = "/api/v1";

/** An HTTP error with the service's own message, so the page can show what went wrong. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** FastAPI puts the reason in `detail`: a string, or a list of validation errors. */
function describeError(status, data) {
  const detail = data && typeof data === "object" ? data.detail : data;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  if (status === 401) return "sign in with an API token first";
  return `request failed with HTTP ${status}`;
}

/**
 * Call the service; resolves to the parsed JSON answer (null for 204), or with `withStatus` to
 * `{status, data}` (a page that says "accepted (202)" needs the status too). Rejects with ApiError.
 */
export async function api(path, { method = "GET", json, form, withStatus = false } = {}) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (form !== undefined) {
    options.body = form;
  }
  const response = await fetch(API + path, options);
  if (response.status === 204) return withStatus ? { status: 204, data: null } : null;
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: keep the text for the error message */
  }
  if (!response.ok) throw new ApiError(response.status, describeError(response.status, data));
  return withStatus ? { status: response.status, data } : data;
}

/** Query string from an object; empty values are left out, arrays repeat the key. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
