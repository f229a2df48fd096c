// The review API from the page: fetch with the session's cookie and the CSRF token, its errors (ApiError:
// the status and the decoded body) and their description for the message area.
import { csrf } from "./page";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
  ) {
    super(message);
  }
}

export function describe(body: unknown): string {
  if (body === null || body === undefined) return "";
  if (typeof body === "string") return body;
  if (Array.isArray(body)) return body.map(describe).join("; ");
  if (typeof body === "object") {
    // The platform's errors: {detail, field, [field]: detail} (core/errors.py); DRF's own: {field: [..]}.
    const { detail, field } = body as { detail?: unknown; field?: unknown };
    if (typeof detail === "string") return typeof field === "string" ? `${field}: ${detail}` : detail;
    return Object.entries(body as Record<string, unknown>)
      .filter(([key]) => key !== "current" && key !== "yours")
      .map(([key, value]) => (key === "detail" ? describe(value) : `${key}: ${describe(value)}`))
      .join("; ");
  }
  return String(body);
}

export async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("X-CSRFToken", csrf);
  headers.set("Accept", "application/json");
  const response = await fetch(path, { credentials: "same-origin", ...init, headers });
  if (!response.ok) {
    const type = response.headers.get("Content-Type") ?? "";
    const body: unknown = type.includes("json") ? await response.json() : await response.text();
    const text = typeof body === "string" && body.length > 200 ? response.statusText : describe(body);
    throw new ApiError(response.status, body, `${init.method ?? "GET"} ${path}: ${response.status} ${text}`);
  }
  return response;
}

export async function postJson(path: string, data: object): Promise<unknown> {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
  return response.json();
}
