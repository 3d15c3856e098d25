// tusfs reference backend: the one seeded PRNG (tests/backend/prng.js).
//
// mulberry32: a uint32 state advanced with integer steps only, so a seed
// gives the same sequence on every machine and engine. Used by the fault
// injection in server.js and by mkmedia.mjs.

// Returns a generator of uint32 values; divide by 2^32 for [0, 1).
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}
