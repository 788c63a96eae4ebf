// A standard js-libp2p peer, default settings (TCP, Noise, Yamux, identify,
// ping), against a vigil node: what a libp2p ping or identify probe sees.
//
//   node probe.mjs MULTIADDR/p2p/PEER G8 WAIT_CLOSE_SECS
//
// Prints one JSON document: what identify reported, the ping round trip,
// what became of each vigil-specific or routing protocol it tried, and
// whether the node closed the connection within WAIT_CLOSE_SECS.

// js-libp2p 3 uses Promise.withResolvers (Node.js 22); this machine's
// Node.js is 20. The polyfill is the standard one, set before the imports.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')

const [target, g8, waitCloseArg] = process.argv.slice(2)
const waitClose = Number(waitCloseArg ?? 0)
const out = {}

const within = (p, ms, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))])

const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})
out.agent = 'js-libp2p'
try {
  const identified = new Promise((resolve) => node.addEventListener('peer:identify', (e) => resolve(e.detail)))
  const ma = multiaddr(target)
  const conn = await within(node.dial(ma), 10000, 'dial')
  out.encryption = conn.encryption
  out.multiplexer = conn.multiplexer
  const id = await within(identified, 10000, 'identify')
  out.identify = {
    peer: id.peerId.toString(),
    protocol_version: id.protocolVersion,
    agent_version: id.agentVersion,
    protocols: id.protocols,
    listen_addrs: id.listenAddrs.map((a) => a.toString())
  }
  out.ping_ms = await within(node.services.ping.ping(ma), 10000, 'ping')

  // A request frame of vigil's codec (u32 big-endian length, then the body).
  const frame = new Uint8Array([0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
  out.tried = {}
  // The standard DHT and gossipsub ids (vigil's are genesis-scoped), then
  // vigil requests as a peer that never exchanged a status.
  for (const p of ['/ipfs/kad/1.0.0', '/meshsub/1.1.0', `/vigil/${g8}/sync/1`, `/vigil/${g8}/challenge/1`]) {
    try {
      const s = await within(conn.newStream(p), 10000, `open ${p}`)
      s.send(frame)
      let got = 0
      try {
        await within((async () => { for await (const chunk of s) got += chunk.byteLength })(), 10000, `answer on ${p}`)
        out.tried[p] = got === 0 ? 'closed unanswered' : `answered ${got} bytes`
      } catch (e) {
        out.tried[p] = got === 0 ? `closed unanswered (${e.name})` : `answered ${got} bytes`
      }
    } catch (e) {
      out.tried[p] = e.name
    }
  }

  if (waitClose > 0) {
    const t0 = Date.now()
    while (conn.status === 'open' && Date.now() - t0 < waitClose * 1000) {
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    out.closed_by_node = conn.status !== 'open'
    out.open_secs = (Date.now() - t0) / 1000
  }
} catch (e) {
  out.error = `${e.name}: ${e.message}`
}
console.log(JSON.stringify(out, null, 2))
await node.stop()
process.exit(0)
