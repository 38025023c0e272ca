// Picking a service, staff member or day shows its free times at once (the button is for
// browsers without scripts).
for (const form of document.querySelectorAll("form[data-autosubmit]")) {
  form.addEventListener("change", () => form.requestSubmit());
}
