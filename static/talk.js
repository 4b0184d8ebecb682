/* Agent Stream: "Talk to this agent" — a test call from the browser's microphone.
   The page asks for the microphone, mints a one-time call token (a POST with this
   session's CSRF token), opens the same-origin stream socket (provider "web") and sends
   the token as its first message. Audio is 16 kHz 16-bit PCM both ways, in binary frames;
   static/talk-worklet.js converts it on the audio thread. No dependencies. */
(function () {
  "use strict";

  var panel = document.getElementById("talk");
  if (!panel) return;
  var opener = document.querySelector("[data-talk-open]");
  var stateText = panel.querySelector("[data-talk-state]");
  var meter = panel.querySelector("[data-talk-level]");
  var lines = panel.querySelector("[data-talk-transcript]");
  var muteButton = panel.querySelector("[data-talk-mute]");
  var hangupButton = panel.querySelector("[data-talk-hangup]");
  var runsLink = panel.querySelector("[data-talk-runs]");
  var form = panel.querySelector("[data-talk-form]");
  var call = null; // the live call: {ctx, stream, ws, capture, playback, muted, ended}

  function say(text) { stateText.textContent = text; }

  function addLine(kind, text) {
    var item = document.createElement("li");
    item.className = "talk-line talk-" + kind;
    var who = document.createElement("strong");
    who.textContent = kind === "agent" ? "Agent" : kind === "caller" ? "You" : "Note";
    item.appendChild(who);
    item.appendChild(document.createTextNode(" " + text));
    lines.appendChild(item);
    lines.scrollTop = lines.scrollHeight;
  }

  function end(message) {
    if (!call || call.ended) return;
    call.ended = true;
    say(message);
    if (call.stream) call.stream.getTracks().forEach(function (track) { track.stop(); });
    if (call.ctx) call.ctx.close().catch(function () {});
    if (call.ws && call.ws.readyState < 2) call.ws.close();
    meter.value = 0;
    muteButton.disabled = hangupButton.disabled = true;
    runsLink.hidden = false;
    opener.disabled = false;
  }

  function mintToken() {
    return fetch(panel.getAttribute("data-token-url"), {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      redirect: "manual", // signed out: the login redirect is a failure, not an answer
      headers: { Accept: "application/json" }
    }).then(function (response) {
      var json = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0;
      if (!response.ok || !json) {
        return (json ? response.json() : Promise.resolve({})).then(function (body) {
          throw new Error(body.error || "the server refused (sign in again and reload the page)");
        });
      }
      return response.json();
    });
  }

  function onServerMessage(event) {
    if (typeof event.data !== "string") { // agent audio
      call.playback.port.postMessage({ pcm: event.data }, [event.data]);
      return;
    }
    var message;
    try { message = JSON.parse(event.data); } catch (e) { return; }
    if (message.event === "clear") call.playback.port.postMessage({ clear: true });
    else if (message.event === "mark") call.playback.port.postMessage({ mark: message.name });
    else if (message.event === "transcript") addLine(message.role, message.text);
    else if (message.event === "transfer") addLine("note", message.text);
    else if (message.event === "hangup") say("The agent hung up");
  }

  function connect(token) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + token.stream_path);
    ws.binaryType = "arraybuffer";
    call.ws = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({ event: "start", token: token.token }));
      say("Connected: speak now");
      muteButton.disabled = hangupButton.disabled = false;
    };
    ws.onmessage = onServerMessage;
    ws.onclose = function (event) {
      var why = event.code === 1000 ? "" : ": " + (event.reason || "the connection was lost") +
        " (" + event.code + ")";
      end((event.reason === "agent hung up" ? "The agent hung up" : "Call ended") + why);
    };
  }

  function start() {
    if (call && !call.ended) return;
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
    lines.textContent = "";
    runsLink.hidden = true;
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      say("No microphone here: the browser allows one only on HTTPS (or localhost)");
      return;
    }
    opener.disabled = true;
    muteButton.setAttribute("aria-pressed", "false");
    muteButton.textContent = "Mute";
    // made within the click, so the browser lets it play
    call = { ctx: new AudioContext(), stream: null, ws: null, muted: false, ended: false };
    var current = call;
    say("Asking for the microphone…");
    var constraints = { audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true,
                                 autoGainControl: true } };
    Promise.all([
      navigator.mediaDevices.getUserMedia(constraints),
      current.ctx.audioWorklet.addModule(panel.getAttribute("data-worklet-url"))
    ]).then(function (results) {
      current.stream = results[0];
      if (current.ended) throw new Error("ended");
      var ctx = current.ctx;
      current.capture = new AudioWorkletNode(ctx, "talk-capture");
      current.playback = new AudioWorkletNode(ctx, "talk-playback", { outputChannelCount: [1] });
      var sink = ctx.createGain(); // the capture node must reach the destination to run
      sink.gain.value = 0;
      ctx.createMediaStreamSource(current.stream).connect(current.capture);
      current.capture.connect(sink).connect(ctx.destination);
      current.playback.connect(ctx.destination);
      current.capture.port.onmessage = function (event) {
        meter.value = event.data.level;
        if (current.ws && current.ws.readyState === 1) current.ws.send(event.data.pcm);
      };
      current.playback.port.onmessage = function (event) {
        if (current.ws && current.ws.readyState === 1) {
          current.ws.send(JSON.stringify({ event: "mark", name: event.data.mark }));
        }
      };
      say("Connecting…");
      return Promise.all([mintToken(), ctx.resume()]);
    }).then(function (results) {
      if (!current.ended) connect(results[0]);
    }).catch(function (error) {
      var blocked = error && error.name === "NotAllowedError";
      end(blocked ? "Microphone blocked: allow it for this site and try again"
                  : "Could not start the call: " + (error && error.message || error));
    });
  }

  opener.addEventListener("click", start);

  muteButton.addEventListener("click", function () {
    if (!call || call.ended || !call.capture) return;
    call.muted = !call.muted;
    call.capture.port.postMessage({ muted: call.muted });
    muteButton.setAttribute("aria-pressed", String(call.muted));
    muteButton.textContent = call.muted ? "Unmute" : "Mute";
    say(call.muted ? "Muted: the agent hears silence" : "Connected: speak now");
  });

  hangupButton.addEventListener("click", function () {
    if (!call || call.ended || !call.ws) return;
    var ws = call.ws;
    hangupButton.disabled = true;
    if (ws.readyState !== 1) { ws.close(); return; }
    ws.send(JSON.stringify({ event: "hangup" }));
    say("Hanging up…");
    setTimeout(function () { if (ws.readyState < 2) ws.close(); }, 5000); // the server closes first
  });
})();
