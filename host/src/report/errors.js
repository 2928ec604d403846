// Runs first: every error of the page (a script's, or a blocked request's)
// is kept in window.__errors, for the tests and for anyone with a console.
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e.type)); });
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("unhandled rejection: " + String(e.reason)); });
document.addEventListener("securitypolicyviolation", function (e) { window.__errors.push("blocked by the page's policy: " + e.violatedDirective + " " + e.blockedURI); });
