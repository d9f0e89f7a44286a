/*! clm.js: the first-party tracker of clm, the self-hosted lifecycle platform.
 * Sends Segment-spec messages to clm's /v1/batch; no dependencies, no third party.
 * API: clm.init({host, writeKey, cookieless, requireConsent}), clm.page(name, props),
 * clm.track(event, props), clm.identify(userId, traits), clm.consent('granted' |
 * 'denied'), clm.flush(). Calls made before this file loads are queued in clm.q by
 * the snippet in docs/collector.md and replayed here in order.
 */
(function (w, d) {
  "use strict";
  var VERSION = "1.0.0";
  var COOKIE = "clm_aid";
  var cfg = { host: "", writeKey: "", cookieless: false, requireConsent: false,
              flushMs: 1000, maxBatch: 100 };
  var queue = [];      // messages ready to send
  var held = [];       // messages waiting for consent
  var consent = null;  // null (unknown), "granted" or "denied"
  var anonymousId = null;
  var userId = null;
  var timer = null;

  function uuid() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function readCookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }

  function visitor() {
    // Cookieless mode keeps the id for this page only: nothing is stored on the device.
    if (anonymousId) return anonymousId;
    anonymousId = cfg.cookieless ? null : readCookie(COOKIE);
    if (!anonymousId) {
      anonymousId = uuid();
      if (!cfg.cookieless) {
        d.cookie = COOKIE + "=" + encodeURIComponent(anonymousId) +
          "; Max-Age=31536000; Path=/; SameSite=Lax" +
          (location.protocol === "https:" ? "; Secure" : "");
      }
    }
    return anonymousId;
  }

  function campaign() {
    var out = {}, q = new URLSearchParams(location.search);
    ["source", "medium", "term", "content"].forEach(function (k) {
      if (q.get("utm_" + k)) out[k] = q.get("utm_" + k);
    });
    if (q.get("utm_campaign")) out.name = q.get("utm_campaign");
    return out;
  }

  function context() {
    return {
      library: { name: "clm.js", version: VERSION },
      page: { url: location.href, path: location.pathname, title: d.title,
              referrer: d.referrer },
      userAgent: navigator.userAgent,
      locale: navigator.language,
      campaign: campaign(),
      consent: consent || "unknown",
      cookieless: !!cfg.cookieless
    };
  }

  function message(type, fields) {
    var m = { type: type, messageId: uuid(), timestamp: new Date().toISOString(),
              anonymousId: visitor(), context: context() };
    if (userId) m.userId = userId;
    for (var k in fields) if (fields[k] !== undefined) m[k] = fields[k];
    return m;
  }

  function enqueue(m) {
    if (consent === "denied") return;
    if (cfg.requireConsent && consent !== "granted") { held.push(m); return; }
    queue.push(m);
    if (queue.length >= cfg.maxBatch) flush(false);
    else if (!timer) timer = setTimeout(function () { flush(false); }, cfg.flushMs);
  }

  function flush(onHide) {
    if (timer) { clearTimeout(timer); timer = null; }
    while (queue.length) {
      var body = JSON.stringify({ writeKey: cfg.writeKey, sentAt: new Date().toISOString(),
                                  batch: queue.splice(0, cfg.maxBatch) });
      var url = cfg.host.replace(/\/$/, "") + "/v1/batch";
      // text/plain keeps the request "simple": no CORS preflight, and sendBeacon
      // accepts it. The collector reads the JSON whatever the content type says.
      if (onHide && navigator.sendBeacon &&
          navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) continue;
      fetch(url, { method: "POST", body: body, keepalive: true,
                   headers: { "Content-Type": "text/plain" } }).catch(function () {});
    }
  }

  var api = {
    init: function (opts) { for (var k in opts) cfg[k] = opts[k]; },
    page: function (name, props) {
      enqueue(message("page", { name: name || d.title, properties: props || {} }));
    },
    track: function (event, props) {
      enqueue(message("track", { event: event, properties: props || {} }));
    },
    identify: function (id, traits) {
      userId = id ? String(id) : null;
      enqueue(message("identify", { traits: traits || {} }));
    },
    consent: function (state) {
      consent = state === "granted" ? "granted" : "denied";
      var waiting = held; held = [];
      if (consent === "granted") {
        waiting.forEach(function (m) { m.context.consent = "granted"; enqueue(m); });
      }
    },
    flush: function () { flush(false); },
    version: VERSION
  };

  // Send what is queued when the page is hidden or left: the last chance to send.
  w.addEventListener("pagehide", function () { flush(true); });
  d.addEventListener("visibilitychange", function () {
    if (d.visibilityState === "hidden") flush(true);
  });

  var pending = (w.clm && w.clm.q) || [];
  w.clm = api;
  pending.forEach(function (call) { api[call[0]].apply(api, call[1]); });
})(window, document);
