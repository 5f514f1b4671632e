// The templates gallery's live editor: a textarea with data-render="URL" holds a template's
// context as JSON; a moment after each edit it is posted to URL (with the CSRF header), and the
// answer (subject, html, text, warnings) replaces what its card shows, without a reload.
// Invalid JSON, or a context the service refuses, is shown next to the editor; the previews
// keep the last good rendering.
"use strict";

(() => {
  const DEBOUNCE_MS = 300;

  function part(card, name) {
    return card.querySelector(`[data-part="${name}"]`);
  }

  function showError(card, message) {
    const error = part(card, "error");
    error.textContent = message;
    error.hidden = !message;
    card.classList.toggle("has-error", Boolean(message));
  }

  function showWarnings(card, warnings) {
    const box = part(card, "warnings");
    box.replaceChildren();
    if (!warnings.length) {
      const ok = document.createElement("p");
      ok.className = "ok";
      ok.textContent = "No warnings.";
      box.append(ok);
      return;
    }
    const list = document.createElement("ul");
    for (const warning of warnings) {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = warning.code;
      item.append(code, " ", warning.message);
      list.append(item);
    }
    box.append(list);
  }

  function show(card, rendered) {
    part(card, "subject").textContent = rendered.subject;
    part(card, "text").textContent = rendered.text;
    // srcdoc into sandboxed iframes (no allow-scripts): the mail's HTML never runs script here
    card.querySelectorAll('iframe[data-part="html"]').forEach((frame) => { frame.srcdoc = rendered.html; });
    showWarnings(card, rendered.warnings);
  }

  // An error answer's detail as one line: a string, or FastAPI's list of {loc, msg}.
  function describe(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((item) => {
        const where = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
        return where ? `${where}: ${item.msg}` : String(item.msg);
      }).join("; ");
    }
    return "the service refused the context";
  }

  // The textarea's text if it is a JSON object, else why not (the browser's own message).
  function checked(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return { problem: `Invalid JSON: ${error.message}` };
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { problem: "The context must be a JSON object: { \"name\": \"value\", … }" };
    }
    return { problem: null };
  }

  function attach(editor) {
    const card = editor.closest("[data-template]");
    const status = part(card, "status");
    let timer = null;
    let latest = 0; // answers to earlier edits that arrive late are dropped

    async function rerender() {
      const asked = ++latest;
      const { problem } = checked(editor.value);
      if (problem) {
        showError(card, problem);
        status.textContent = "";
        return;
      }
      status.textContent = "Rendering…";
      let response;
      let answer;
      try {
        response = await fetch(editor.dataset.render, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": window.notifierConsole.csrfToken() },
          // the text as typed, inside the API preview's {"context": …}: numbers keep every digit
          body: `{"context": ${editor.value}\n}`,
        });
        const body = await response.text();
        try {
          answer = JSON.parse(body);
        } catch {
          answer = { detail: body.slice(0, 200) || response.statusText };
        }
      } catch (error) {
        if (asked !== latest) return;
        showError(card, `The service did not answer: ${error.message}`);
        status.textContent = "";
        return;
      }
      if (asked !== latest) return;
      status.textContent = "";
      if (!response.ok) {
        showError(card, `${response.status}: ${describe(answer.detail)}`);
        return;
      }
      showError(card, "");
      show(card, answer);
      status.textContent = "Rendered.";
    }

    editor.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(rerender, DEBOUNCE_MS);
    });
    const reset = card.querySelector("[data-reset]");
    if (reset) {
      reset.addEventListener("click", () => {
        editor.value = editor.dataset.sample;
        clearTimeout(timer);
        rerender();
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("textarea[data-render]").forEach(attach);
  });
})();
