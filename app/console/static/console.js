// The console's few behaviours, without a framework (no CDN, no build step):
// - a form with data-confirm asks before it submits;
// - an element with data-poll="URL" is refreshed from URL (same-origin HTML) every
//   data-poll-seconds (default 2) while the page is visible.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function refresh(element) {
  if (document.hidden) return;
  const response = await fetch(element.dataset.poll, { credentials: "same-origin", headers: { "X-Requested-With": "poll" } });
  // a redirect means the session ended (to sign-in): leave the rows as they are
  if (!response.ok || response.redirected) return;
  const html = await response.text();
  if (html !== element.innerHTML) element.innerHTML = html;
}

function startPolling(element) {
  const seconds = Number(element.dataset.pollSeconds || "2");
  setInterval(() => refresh(element).catch(() => {}), seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(startPolling);
});

window.notifierConsole = { csrfToken, refresh };
