// TURN over TLS at an IP address: Firefox silently ignores `turns:` URIs whose host is an IP
// literal (no candidates, no error; `turns:<host name>` works — measured with Firefox ESR 153).
// Behind a firewall that lets only TLS through, such a Firefox has no media path at all, so the
// room page and /check name that cause instead of blaming the network.

/** An IPv4 literal, or an IPv6 one (bracketed as in a URI, or bare). */
export function isIpLiteral(host) {
  const h = String(host || '');
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(h)) return true;
  return /^\[?[0-9a-f:.]+\]?$/i.test(h) && h.includes(':');
}

/** The host of a `turns:` URI (RFC 7065 §3.1), without brackets; null for any other URI. */
export function turnsHost(uri) {
  const match = /^turns:(\[[^\]]+\]|[^:?]+)/i.exec(String(uri).trim());
  return match ? match[1].replace(/^\[|\]$/g, '') : null;
}

/** Whether this browser ignores `turns:` at an IP literal: Firefox (Gecko) does. */
export function ignoresTurnsAtIp(userAgent) {
  return /\bFirefox\//.test(String(userAgent || ''));
}

/**
 * The IP address of a `turns:` URI in `iceServers` that this browser (by `userAgent`) will not
 * use, or null when it uses every one.
 */
export function unusableTlsRelay(iceServers, userAgent) {
  if (!ignoresTurnsAtIp(userAgent)) return null;
  for (const server of iceServers || []) {
    const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
    for (const uri of urls) {
      const host = turnsHost(uri);
      if (host && isIpLiteral(host)) return host;
    }
  }
  return null;
}
