// The sun's apparent elevation, for the chart's curve: NOAA's solar position equations
// (the "NOAA Solar Calculator" spreadsheet, after Meeus, Astronomical Algorithms), with NOAA's
// refraction correction. Good to a small fraction of a degree, which is all a chart needs; the
// phases and events themselves come from the service (astral), so page and plan agree.

const rad = Math.PI / 180;

/** Apparent sun elevation in degrees at `ms` (epoch milliseconds) for latitude/longitude. */
export function sunElevation(ms, latitude, longitude) {
  const jd = ms / 86400000 + 2440587.5;
  const t = (jd - 2451545) / 36525; // Julian centuries since J2000
  const l0 = (((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360) + 360) % 360;
  const m = 357.52911 + t * (35999.05029 - 0.0001537 * t);
  const e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t);
  const c = Math.sin(m * rad) * (1.914602 - t * (0.004817 + 0.000014 * t)) +
    Math.sin(2 * m * rad) * (0.019993 - 0.000101 * t) + Math.sin(3 * m * rad) * 0.000289;
  const omega = 125.04 - 1934.136 * t;
  const lambda = l0 + c - 0.00569 - 0.00478 * Math.sin(omega * rad);
  const eps0 = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60;
  const eps = eps0 + 0.00256 * Math.cos(omega * rad);
  const decl = Math.asin(Math.sin(eps * rad) * Math.sin(lambda * rad));
  const y = Math.tan((eps / 2) * rad) ** 2;
  const eqTime = 4 / rad * (y * Math.sin(2 * l0 * rad) - 2 * e * Math.sin(m * rad) +
    4 * e * y * Math.sin(m * rad) * Math.cos(2 * l0 * rad) -
    0.5 * y * y * Math.sin(4 * l0 * rad) - 1.25 * e * e * Math.sin(2 * m * rad));
  const utcMinutes = (((ms % 86400000) + 86400000) % 86400000) / 60000;
  const trueSolar = (((utcMinutes + eqTime + 4 * longitude) % 1440) + 1440) % 1440;
  const hourAngle = trueSolar / 4 < 0 ? trueSolar / 4 + 180 : trueSolar / 4 - 180;
  const cosZenith = Math.sin(latitude * rad) * Math.sin(decl) +
    Math.cos(latitude * rad) * Math.cos(decl) * Math.cos(hourAngle * rad);
  const elevation = 90 - Math.acos(Math.max(-1, Math.min(1, cosZenith))) / rad;
  return elevation + refraction(elevation);
}

function refraction(elevation) {
  if (elevation > 85) return 0;
  const te = Math.tan(elevation * rad);
  let arcsec;
  if (elevation > 5) arcsec = 58.1 / te - 0.07 / te ** 3 + 0.000086 / te ** 5;
  else if (elevation > -0.575) {
    arcsec = 1735 + elevation * (-518.2 + elevation * (103.4 + elevation * (-12.79 + elevation * 0.711)));
  } else arcsec = -20.772 / te;
  return arcsec / 3600;
}

/** Samples of the elevation from `startMs` to `endMs` every `stepMin` minutes. */
export function elevationCurve(startMs, endMs, latitude, longitude, stepMin = 10) {
  const out = [];
  const step = stepMin * 60000;
  for (let t = startMs; t < endMs; t += step) out.push({ t, elevation: sunElevation(t, latitude, longitude) });
  out.push({ t: endMs, elevation: sunElevation(endMs, latitude, longitude) });
  return out;
}
