/* Agent Stream admin: copy to clipboard with a toast, the ⋮ menu, live run updates, and no
   second POST when a page showing a new secret is reloaded.
   No dependencies; every page also works without it except for these things. */
(function () {
  "use strict";

  var toastTimer = null;

  function toast(message) {
    var box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { box.classList.remove("show"); }, 2600);
  }

  // The Clipboard API needs a secure context (https or localhost); plain-http admins
  // (an IP on the LAN) fall back to a hidden textarea and execCommand.
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  function selectContents(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copyFrom(trigger) {
    var text = trigger.getAttribute("data-copy");
    var target = null;
    if (text === null) {
      target = document.getElementById(trigger.getAttribute("data-copy-target"));
      if (!target) return;
      text = target.textContent.trim();
    }
    copyText(text).then(function () {
      toast(trigger.getAttribute("data-toast") || "Copied");
    }, function () {
      if (target) selectContents(target);
      toast("Could not copy: the text is selected, press Ctrl+C (⌘C)");
    });
  }

  // -- the ⋮ menu -----------------------------------------------------------------------------

  function menuParts(menu) {
    var button = menu.querySelector("[aria-haspopup]");
    var items = menu.querySelector("[role=menu]");
    return { button: button, items: items };
  }

  function closeMenu(menu, focusButton) {
    var parts = menuParts(menu);
    parts.items.hidden = true;
    parts.button.setAttribute("aria-expanded", "false");
    if (focusButton) parts.button.focus();
  }

  function openMenu(menu) {
    var parts = menuParts(menu);
    parts.items.hidden = false;
    parts.button.setAttribute("aria-expanded", "true");
    var first = parts.items.querySelector("[role=menuitem]");
    if (first) first.focus();
  }

  function closeAllMenus(except) {
    document.querySelectorAll("[data-menu]").forEach(function (menu) {
      if (menu !== except) closeMenu(menu, false);
    });
  }

  document.addEventListener("click", function (event) {
    var copyTrigger = event.target.closest("[data-copy], [data-copy-target]");
    var menu = event.target.closest("[data-menu]");
    if (copyTrigger) {
      event.preventDefault();
      copyFrom(copyTrigger);
      if (menu) closeMenu(menu, true);
      return;
    }
    var menuButton = event.target.closest("[data-menu] > [aria-haspopup]");
    if (menuButton) {
      var owner = menuButton.parentElement;
      if (menuButton.getAttribute("aria-expanded") === "true") closeMenu(owner, false);
      else { closeAllMenus(owner); openMenu(owner); }
      return;
    }
    if (!menu) closeAllMenus(null);
  });

  document.addEventListener("keydown", function (event) {
    var menu = event.target.closest && event.target.closest("[data-menu]");
    if (event.key === "Escape" && menu) {
      closeMenu(menu, true);
      return;
    }
    if (menu && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      var items = Array.prototype.slice.call(menu.querySelectorAll("[role=menuitem]"));
      var at = items.indexOf(document.activeElement);
      if (items.length) {
        event.preventDefault();
        var next = event.key === "ArrowDown" ? at + 1 : at - 1;
        items[(next + items.length) % items.length].focus();
      }
      return;
    }
    // code blocks that copy on click also copy on Enter/Space when focused
    if ((event.key === "Enter" || event.key === " ") && event.target.matches &&
        event.target.matches("code[data-copy-target]")) {
      event.preventDefault();
      copyFrom(event.target);
    }
  });

  // -- live runs: poll a small JSON endpoint until the run's state changes ----------------------

  function watch(el) {
    var url = el.getAttribute("data-live-status");
    var state = el.getAttribute("data-state");
    var delay = parseInt(document.body.getAttribute("data-poll-ms") || "2000", 10);
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (run) {
          if (run && run.state !== state) window.location.reload();
          else setTimeout(poll, delay);
        })
        .catch(function () { setTimeout(poll, delay * 2); });
    }
    setTimeout(poll, delay);
  }

  // -- a secret shown once: the page answering the form's POST stands for a plain page ----------

  // Without this a reload would post the form again: a second webhook or API key, with a new
  // secret shown. With it the history entry is a GET of that page, which shows no secret.
  function forgetPost(el) {
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", el.getAttribute("data-replace-url"));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-status]").forEach(watch);
    document.querySelectorAll("[data-replace-url]").forEach(forgetPost);
  });
})();
