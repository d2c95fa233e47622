// An xmpp.js client (@xmpp/client, Node), run from the cache where
// tests/support/foreign_clients.py installed it (its node_modules is XMPPJS_MODULES).
//
//     node peer.mjs SERVICE USERNAME PASSWORD PEER_JID
//
// SERVICE is xmpp://127.0.0.1:PORT (TCP with STARTTLS) or xmpps://127.0.0.1:PORT (direct
// TLS); the domain is "localhost". The test server's certificate is self-signed, so the
// caller sets NODE_TLS_REJECT_UNAUTHORIZED=0. Logs in (SCRAM-SHA-1, the only SCRAM
// xmpp.js has; over SASL2 with Bind 2, which enable XEP-0198 and resume inline), with
// XEP-0198 enabled by xmpp.js itself, then:
//   online    {jid, sm: {enabled, id}}       after bind and <enable/>'s answer
//   acked     {id}                           the server acked the chat message sent to PEER_JID
//   received  {body, from}                   one chat message from PEER_JID
//   cut       {}                             the TCP connection was cut under the stream
//   resumed   {jid}                          @xmpp/reconnect reconnected and resumed the
//                                            stream (XEP-0198 resumption)
//   received  {body, from}                   a second chat message (sent while cut)
// Every line printed is one JSON object; errors go to stderr and exit 1.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const modules = process.env.XMPPJS_MODULES;
const { client, xml } = await import(pathToFileURL(join(modules, "@xmpp/client/index.js")).href);

const [service, username, password, peer] = process.argv.slice(2);
const peerBare = peer.split("/")[0];

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function fail(error) {
  process.stderr.write(`xmpp.js peer: ${error?.stack ?? error}\n`);
  process.exit(1);
}

setTimeout(() => fail("timed out"), 60_000).unref();

const xmpp = client({ service, domain: "localhost", username, password, resource: "xmppjs" });
xmpp.on("error", (error) => process.stderr.write(`xmpp.js error: ${error}\n`));

const bodies = [];
let waiting = null;
xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message") || stanza.attrs.type !== "chat") return;
  const body = stanza.getChildText("body");
  if (body === null || (stanza.attrs.from ?? "").split("/")[0] !== peerBare) return;
  emit("received", { body, from: stanza.attrs.from });
  bodies.push(body);
  waiting?.();
});

function nextMessage() {
  return new Promise((resolve) => {
    if (bodies.length) return resolve(bodies.shift());
    waiting = () => { waiting = null; resolve(bodies.shift()); };
  });
}

function once(emitter, name) {
  return new Promise((resolve) => emitter.once(name, resolve));
}

// xmpp.js goes online after resource binding and enables XEP-0198 right after; its own
// handling of the answer runs after this listener, hence setImmediate.
function smEnabled() {
  return new Promise((resolve) => {
    const listener = (nonza) => {
      if (nonza.is("enabled", "urn:xmpp:sm:3") || nonza.is("failed", "urn:xmpp:sm:3")) {
        xmpp.removeListener("nonza", listener);
        setImmediate(resolve);
      }
    };
    xmpp.on("nonza", listener);
  });
}

try {
  const online = once(xmpp, "online");
  const enabled = smEnabled();
  // COMPAT: xmpp.js's start() listens for the server's stream header only once its own
  // header is written; a SASL2 login has no stream restart to emit "open" again, so when
  // the client is online before start() listens (direct TLS, a fast server), start()
  // times out although the client is online. "online" (or the 60 s timer) decides.
  xmpp.start().catch((error) => xmpp.status === "online" || fail(error));
  const jid = (await online).toString();
  // Over SASL2 with Bind 2 (XEP-0386), XEP-0198 was enabled inline, before "online".
  if (!xmpp.streamManagement.enabled) await enabled;
  const sm = xmpp.streamManagement;
  emit("online", { jid, sm: { enabled: sm.enabled, id: sm.id } });
  await xmpp.send(xml("presence"));

  const message = xml("message", { to: peer, type: "chat", id: "xmppjs-1" }, xml("body", {}, "hello from xmpp.js"));
  const acked = new Promise((resolve) => sm.on("ack", (stanza) => stanza.attrs.id === "xmppjs-1" && resolve()));
  await xmpp.send(message);
  await acked;
  emit("acked", { id: "xmppjs-1" });
  await nextMessage();

  // Cut the TCP connection under the stream: @xmpp/reconnect reconnects and resumes.
  const resumed = once(sm, "resumed");
  xmpp.socket.socket.destroy();
  emit("cut");
  await resumed;
  emit("resumed", { jid: xmpp.jid.toString() });
  await nextMessage();
  await xmpp.stop();
  process.exit(0);
} catch (error) {
  fail(error);
}
