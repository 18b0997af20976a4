// A JsSIP user agent under node: the browser SIP stack most WebRTC softphones use, as a real
// SIP-over-WebSocket (RFC 7118) client for callkeeper's tests.
//
//   node wsphone.js WS_URL USER PASSWORD DOMAIN
//
// It registers (digest auth), answers OPTIONS (JsSIP does that itself) and reports what happens
// as JSON lines on stdout: {"event": "registered"}, {"event": "incoming", "from": ...},
// {"event": "confirmed"}, {"event": "ended", "originator": ...}, {"event": "failed", ...}.
// Commands arrive as lines on stdin: "answer", "reject", "hangup", "quit".
//
// node has no WebRTC: a stand-in RTCPeerConnection answers every offer with a fixed G.711 SDP
// (nothing is sent to that port), which is all a signalling test needs.
'use strict';

global.WebSocket = require('ws');
const readline = require('readline');
const JsSIP = require('jssip');

const ANSWER_SDP = [
  'v=0',
  'o=- 1 1 IN IP4 127.0.0.1',
  's=wsphone',
  'c=IN IP4 127.0.0.1',
  't=0 0',
  'm=audio 9 RTP/AVP 0',
  'a=rtpmap:0 PCMU/8000',
  'a=sendrecv',
  '',
].join('\r\n');

class FakePeerConnection {
  constructor() {
    this.iceGatheringState = 'complete';
    this.iceConnectionState = 'connected';
    this.signalingState = 'stable';
    this.localDescription = null;
    this.remoteDescription = null;
  }
  addEventListener() {}
  removeEventListener() {}
  addTrack() {}
  getSenders() { return []; }
  getReceivers() { return []; }
  getLocalStreams() { return []; }
  getRemoteStreams() { return []; }
  async setRemoteDescription(description) { this.remoteDescription = description; }
  async createAnswer() { return { type: 'answer', sdp: ANSWER_SDP }; }
  async createOffer() { return { type: 'offer', sdp: ANSWER_SDP }; }
  async setLocalDescription(description) { this.localDescription = description; }
  close() {}
}

class FakeSessionDescription {
  constructor({ type, sdp }) { this.type = type; this.sdp = sdp; }
}

global.RTCPeerConnection = FakePeerConnection;
global.RTCSessionDescription = FakeSessionDescription;
global.window = global; // JsSIP checks window.RTCPeerConnection before it takes a call

function report(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

const [url, user, password, domain] = process.argv.slice(2);
const ua = new JsSIP.UA({
  sockets: [new JsSIP.WebSocketInterface(url)],
  uri: `sip:${user}@${domain}`,
  password,
  register: true,
  register_expires: 300,
  session_timers: false,
});

let session = null;

ua.on('connected', () => report('connected'));
ua.on('disconnected', () => report('disconnected'));
ua.on('registered', () => report('registered'));
ua.on('registrationFailed', (e) => report('registrationFailed', { cause: e.cause }));
ua.on('newRTCSession', (e) => {
  if (e.originator !== 'remote') return;
  session = e.session;
  report('incoming', { from: e.request.from.uri.toString(), call_id: e.request.call_id });
  session.on('confirmed', () => report('confirmed'));
  session.on('ended', (ev) => report('ended', { originator: ev.originator, cause: ev.cause }));
  session.on('failed', (ev) => report('failed', { originator: ev.originator, cause: ev.cause }));
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = line.trim();
  if (command === 'answer' && session) {
    session.answer({ mediaConstraints: { audio: false, video: false } });
  } else if (command === 'reject' && session) {
    session.terminate({ status_code: 486 });
  } else if (command === 'hangup' && session) {
    session.terminate();
  } else if (command === 'quit') {
    ua.stop();
    setTimeout(() => process.exit(0), 500);
  } else {
    report('error', { command });
  }
});

ua.start();
