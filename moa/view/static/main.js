// moa view: start. Pages are registered by the scripts before this one.
"use strict";

document.getElementById("help-button").addEventListener("click", () => MOA.showHelp(true));
window.addEventListener("hashchange", () => MOA.route());
MOA.route().catch((e) => {
  document.getElementById("app").replaceChildren(MOA.errorBox(`moa view could not start: ${e.message}`));
});
