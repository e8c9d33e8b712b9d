/* Track replay: a truck's positions over a time range, with a time slider. */
(function () {
  'use strict';
  const {i18n: T, urls, range, error} = window.MUCK;
  const C = window.MuckCommon;
  const map = C.createMap('map');
  const api = window.muckTrack = {points: 0, index: 0};
  C.loadZones(map, urls.zones).catch((err) => console.error(err));
  if (error) return;
  const label = (v) => (v === null || v === undefined ? T.none : (T[v] || v));
  C.getJSON(urls.track + '?from=' + range[0] + '&to=' + range[1]).then((data) => {
    const p = data.points, n = data.count;
    api.points = n;
    const count = document.getElementById('track-count');
    if (!n) { count.textContent = T.noPoints; return; }
    count.textContent = n + ' ' + T.points + (data.truncated ? ' · ' + T.truncated : '');
    const latlngs = p.lat.map((lat, i) => [lat, p.lon[i]]);
    const line = L.polyline(latlngs, {color: '#1565c0', weight: 3}).addTo(map);
    map.fitBounds(line.getBounds(), {padding: [30, 30]});
    const marker = L.circleMarker(latlngs[0], {radius: 8, color: '#000', fillColor: '#ef6c00', fillOpacity: 1}).addTo(map);
    const slider = document.getElementById('slider');
    slider.max = n - 1; slider.disabled = false;
    const info = document.getElementById('point-info');
    function show(i) {
      api.index = i;
      marker.setLatLng(latlngs[i]);
      info.innerHTML = '';
      const table = document.createElement('table');
      for (const [k, v] of [[T.time, C.fmtTime(p.t_ms[i])], [T.speed, p.speed[i] === null ? T.none : p.speed[i].toFixed(0) + ' km/h'],
        [T.load, label(p.load[i])], [T.lid, label(p.lid[i])], [T.lift, label(p.lift[i])]]) {
        const tr = table.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v;
      }
      info.appendChild(table);
    }
    slider.addEventListener('input', () => show(Number(slider.value)));
    show(0);
  }).catch((err) => { document.getElementById('track-count').textContent = err.message; });
})();
