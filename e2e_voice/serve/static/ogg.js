// Minimal Ogg/Opus muxer and demuxer (RFC 3533, RFC 7845): enough for one mono Opus stream.
"use strict";

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = (r & 0x80000000) ? ((r << 1) ^ 0x04c11db7) : (r << 1);
    t[i] = r >>> 0;
  }
  return t;
})();

function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  return crc >>> 0;
}

class OggOpusMuxer {
  // sampleRate: the input rate recorded in OpusHead; granule positions are always in 48 kHz units.
  constructor(sampleRate, preSkip = 312) {
    this.serial = (Math.random() * 0xffffffff) >>> 0;
    this.seq = 0;
    this.granule = 0;
    this.sampleRate = sampleRate;
    this.preSkip = preSkip;
  }

  page(packet, headerType, granule) {
    const segs = [];
    let n = packet.length;
    while (n >= 255) { segs.push(255); n -= 255; }
    segs.push(n);
    const page = new Uint8Array(27 + segs.length + packet.length);
    const dv = new DataView(page.buffer);
    page.set([0x4f, 0x67, 0x67, 0x53], 0); // "OggS"
    page[4] = 0; page[5] = headerType;
    dv.setUint32(6, granule % 0x100000000, true);
    dv.setUint32(10, Math.floor(granule / 0x100000000), true);
    dv.setUint32(14, this.serial, true);
    dv.setUint32(18, this.seq++, true);
    page[26] = segs.length;
    page.set(segs, 27);
    page.set(packet, 27 + segs.length);
    dv.setUint32(22, oggCrc(page), true);
    return page;
  }

  headers() {
    const head = new Uint8Array(19);
    const dv = new DataView(head.buffer);
    head.set(new TextEncoder().encode("OpusHead"), 0);
    head[8] = 1; head[9] = 1; // version, channels
    dv.setUint16(10, this.preSkip, true);
    dv.setUint32(12, this.sampleRate, true);
    dv.setInt16(16, 0, true); head[18] = 0;
    const vendor = new TextEncoder().encode("e2e-voice");
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    tags.set(new TextEncoder().encode("OpusTags"), 0);
    new DataView(tags.buffer).setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    return [this.page(head, 0x02, 0), this.page(tags, 0x00, 0)];
  }

  // durationUs: duration of this Opus packet in microseconds.
  packet(data, durationUs) {
    this.granule += Math.round(durationUs * 48000 / 1e6);
    return this.page(data, 0x00, this.granule);
  }
}

class OggDemuxer {
  constructor() { this.buf = new Uint8Array(0); this.partial = null; }

  // Feed bytes; returns complete packets (Uint8Array) in order.
  push(bytes) {
    const merged = new Uint8Array(this.buf.length + bytes.length);
    merged.set(this.buf, 0); merged.set(bytes, this.buf.length);
    this.buf = merged;
    const packets = [];
    for (;;) {
      if (this.buf.length < 27) break;
      if (this.buf[0] !== 0x4f || this.buf[1] !== 0x67 || this.buf[2] !== 0x67 || this.buf[3] !== 0x53) {
        throw new Error("bad Ogg capture pattern");
      }
      const nSeg = this.buf[26];
      if (this.buf.length < 27 + nSeg) break;
      const segs = this.buf.subarray(27, 27 + nSeg);
      const bodyLen = segs.reduce((a, b) => a + b, 0);
      if (this.buf.length < 27 + nSeg + bodyLen) break;
      let off = 27 + nSeg;
      let cur = this.partial || [];
      for (const s of segs) {
        cur.push(this.buf.slice(off, off + s));
        off += s;
        if (s < 255) {
          const len = cur.reduce((a, b) => a + b.length, 0);
          const pkt = new Uint8Array(len);
          let o = 0;
          for (const c of cur) { pkt.set(c, o); o += c.length; }
          packets.push(pkt);
          cur = [];
        }
      }
      this.partial = cur.length ? cur : null;
      this.buf = this.buf.slice(off);
    }
    return packets;
  }
}
