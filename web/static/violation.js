/* One violation: the evidence track on the map, the episode's first and last fix marked. */
(function () {
  'use strict';
  const {evidence: ev, i18n: T} = window.MUCK;
  const C = window.MuckCommon;
  const map = C.createMap('map');
  map.invalidateSize();  // the container is laid out in a grid: measure it before drawing
  const api = window.muckViolation = {points: 0, start: null, end: null};
  const latlngs = ev.lat.map((lat, i) => [lat, ev.lon[i]]).filter((p) => p[0] !== null && p[1] !== null);
  api.points = latlngs.length;
  if (!latlngs.length) return;
  const all = L.polyline(latlngs, {color: '#78909c', weight: 2, dashArray: '4'}).addTo(map);
  if (ev.start !== null) {
    const last = ev.end !== null ? ev.end : latlngs.length - 1;
    L.polyline(latlngs.slice(ev.start, last + 1), {color: '#d50000', weight: 4}).addTo(map);
    L.circleMarker(latlngs[ev.start], {radius: 8, color: '#000', fillColor: '#2e7d32', fillOpacity: 1})
      .bindTooltip(T.start).addTo(map);
    api.start = ev.start;
  }
  if (ev.end !== null) {
    L.circleMarker(latlngs[ev.end], {radius: 8, color: '#000', fillColor: '#d50000', fillOpacity: 1})
      .bindTooltip(T.end).addTo(map);
    api.end = ev.end;
  }
  latlngs.forEach((p) => L.circleMarker(p, {radius: 2, color: '#37474f', weight: 1}).addTo(map));
  map.fitBounds(all.getBounds(), {padding: [30, 30], maxZoom: 17, animate: false});
})();
