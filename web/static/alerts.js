// The live feed: server-sent events from /alerts/stream update the badge in the navigation
// bar, show a short notice linking to the violation and play a short tone (Web Audio, no
// sound file), unless the user muted it (kept in localStorage).
(function () {
  "use strict";
  var script = document.getElementById("alerts-script");
  var badge = document.getElementById("alert-badge");
  var mute = document.getElementById("alert-mute");
  var toasts = document.getElementById("alert-toasts");
  if (!script || !badge || !window.EventSource) return;
  var KEY = "muck-alerts-muted";
  var audio = null;

  function muted() { return window.localStorage.getItem(KEY) === "1"; }
  function showMute() { mute.textContent = muted() ? mute.dataset.off : mute.dataset.on; }
  mute.addEventListener("click", function () {
    window.localStorage.setItem(KEY, muted() ? "0" : "1");
    showMute();
  });
  showMute();

  function setCount(n) {
    badge.textContent = String(n);
    badge.classList.toggle("empty", !n);
  }

  function beep() {
    if (muted()) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var osc = audio.createOscillator(), gain = audio.createGain(), t = audio.currentTime;
      osc.type = "sine";
      osc.frequency.setValueAtTime(880, t);
      osc.frequency.setValueAtTime(660, t + 0.12);
      gain.gain.setValueAtTime(0.15, t);
      gain.gain.exponentialRampToValueAtTime(0.001, t + 0.3);
      osc.connect(gain).connect(audio.destination);
      osc.start(t);
      osc.stop(t + 0.3);
    } catch (e) { /* no audio device: the badge still shows it */ }
  }

  function toast(a) {
    var link = document.createElement("a");
    link.href = a.url;
    link.className = "alert-toast severity-" + a.severity;
    link.dataset.alert = a.id;
    link.textContent = a.event + " · " + a.kind + " · " + a.plate + " · " + a.at + " (" + a.timezone + ")";
    toasts.insertBefore(link, toasts.firstChild);
    while (toasts.children.length > 5) toasts.removeChild(toasts.lastChild);
    window.setTimeout(function () { link.remove(); }, 60000);
  }

  var source = new EventSource(script.dataset.stream);
  source.addEventListener("count", function (e) { setCount(parseInt(e.data, 10) || 0); });
  source.addEventListener("alert", function (e) {
    var a = JSON.parse(e.data);
    setCount(a.unread);
    toast(a);
    beep();
  });
})();
