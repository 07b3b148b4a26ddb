// RTCConfiguration from what the server sends in `joined` / `ice-servers`, narrowed by ?relay=.

/** 'udp' | 'tcp' | 'tls' for a TURN URI, or null for anything else (stun:, malformed). */
export function turnTransport(uri) {
  const match = /^(turns?):([^?]+)(?:\?(.*))?$/i.exec(String(uri).trim());
  if (!match) return null;
  if (match[1].toLowerCase() === 'turns') return 'tls';
  const transport = new URLSearchParams(match[3] || '').get('transport');
  return (transport || 'udp').toLowerCase() === 'tcp' ? 'tcp' : 'udp';
}

function urlList(urls) {
  return Array.isArray(urls) ? urls : urls ? [urls] : [];
}

/**
 * iceServers as received, iceTransportPolicy as the server demands ('relay' forces TURN for
 * everyone); relay='udp'|'tcp'|'tls' keeps only that TURN URI and forces relayed paths too.
 */
export function rtcConfiguration(iceServers, serverPolicy, relay = null) {
  let servers = (iceServers || []).map((s) => ({ ...s, urls: urlList(s.urls) }));
  let policy = serverPolicy === 'relay' ? 'relay' : 'all';
  if (relay) {
    servers = servers
      .map((s) => ({ ...s, urls: s.urls.filter((u) => turnTransport(u) === relay) }))
      .filter((s) => s.urls.length > 0);
    policy = 'relay';
  }
  return {
    iceServers: servers,
    iceTransportPolicy: policy,
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
  };
}
