// The peer of bench/thumbnails.py: the same three thumbnails with sharp (its own bundled libvips).
// Output per image: fit inside size x size, pad to the square on white, EXIF orientation applied,
// metadata stripped (sharp's default), JPEG at the given qualities.
//
//   node thumbs.js spec.json   ->  one JSON line on stdout
//
// spec: {files: [path], concurrency: n, variant: "clone" | "cascade", sizes: [150, 400, 800],
//        qualities: [80, 85, 90], background: [255, 255, 255], threads: n, enlarge: false,
//        out_dir: path}
//
// enlarge (default false, as ThumbnailSettings.enlarge): images smaller than a box are padded, not
// blown up. out_dir (bench/parity.py): no timing; each file once, its thumbnails written to
// out_dir/<file name without extension>-<size>.jpg, and the list of them printed as one JSON line.
"use strict";

const fs = require("fs");
const path = require("path");
const sharp = require("sharp");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const bg = { r: spec.background[0], g: spec.background[1], b: spec.background[2], alpha: 1 };
sharp.cache(false); // as ours: no operation cache between uploads
if (spec.threads) sharp.concurrency(spec.threads);

const withoutEnlargement = !spec.enlarge;
const pad = (size) => ({ width: size, height: size, fit: "contain", background: bg, withoutEnlargement });

// Idiomatic sharp: one pipeline per size, each decoding the input again (with shrink-on-load).
async function clone(buf) {
  const base = sharp(buf, { failOn: "truncated" }).rotate();
  return Promise.all(
    spec.sizes.map((size, i) =>
      base.clone().resize(pad(size)).flatten({ background: bg }).jpeg({ quality: spec.qualities[i] }).toBuffer({ resolveWithObject: true }),
    ),
  );
}

// As ours: decode once to the largest size, then each smaller size from those pixels.
async function cascade(buf) {
  const largest = Math.max(...spec.sizes);
  const { data, info } = await sharp(buf, { failOn: "truncated" })
    .rotate()
    .resize({ width: largest, height: largest, fit: "inside", withoutEnlargement })
    .flatten({ background: bg })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const raw = { raw: { width: info.width, height: info.height, channels: info.channels } };
  return Promise.all(
    spec.sizes.map((size, i) =>
      sharp(data, raw).resize(pad(size)).jpeg({ quality: spec.qualities[i] }).toBuffer({ resolveWithObject: true }),
    ),
  );
}

// Parity mode: the thumbnails themselves, written to files.
async function writeOutputs(work) {
  fs.mkdirSync(spec.out_dir, { recursive: true });
  const written = [];
  for (const file of spec.files) {
    const stem = path.basename(file, path.extname(file));
    const out = await work(fs.readFileSync(file));
    out.forEach((o, i) => {
      const dest = path.join(spec.out_dir, `${stem}-${spec.sizes[i]}.jpg`);
      fs.writeFileSync(dest, o.data);
      written.push({ file, size: spec.sizes[i], path: dest, width: o.info.width, height: o.info.height });
    });
  }
  process.stdout.write(JSON.stringify({ outputs: written, versions: sharp.versions }) + "\n");
}

async function main() {
  const work = spec.variant === "cascade" ? cascade : clone;
  if (spec.out_dir) return writeOutputs(work);
  const latencies = [];
  let sample = null;
  let next = 0;
  await work(fs.readFileSync(spec.files[0])); // one unmeasured image first, as ours
  const cpu0 = process.cpuUsage();
  const started = process.hrtime.bigint();
  async function lane() {
    while (next < spec.files.length) {
      const path = spec.files[next++];
      const t0 = process.hrtime.bigint();
      const buf = fs.readFileSync(path); // the worker's download, from the page cache
      const out = await work(buf);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (sample === null) sample = out.map((o) => [o.info.width, o.info.height, o.info.size]);
    }
  }
  await Promise.all(Array.from({ length: spec.concurrency }, lane));
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  // VmHWM: this process's own peak (maxRSS would include the parent's peak from before exec).
  const hwm = /VmHWM:\s+(\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  const rss = hwm ? Number(hwm[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
  process.stdout.write(
    JSON.stringify({
      latencies_ms: latencies,
      wall_s: wall,
      cpu_s: (cpu.user + cpu.system) / 1e6,
      max_rss_mb: rss,
      sample,
      versions: sharp.versions,
    }) + "\n",
  );
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
