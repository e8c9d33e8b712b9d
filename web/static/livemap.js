/* Live map: every truck drawn on one canvas (no DOM element per truck), updated with deltas. */
(function () {
  'use strict';
  const {config: cfg, i18n: T, urls} = window.MUCK;
  const C = window.MuckCommon;
  const COLORS = {empty: '#2e7d32', loaded: '#ef6c00', violation: '#d50000', dark: '#616161', unknown: '#1565c0'};
  const map = C.createMap('map');
  const trucks = new Map();            // id -> truck state
  const companies = {};                // id -> name
  let listed = {companies: {}, trucks: {}};  // credit lists in force: id -> watch/red/black
  const LIST_COLORS = {watch: '#f9a825', red: '#c62828', black: '#000'};
  function listOf(t) {
    const a = listed.trucks[t.id], b = listed.companies[t.company_id];
    const rank = {watch: 0, red: 1, black: 2};
    if (a && b) return rank[a] >= rank[b] ? a : b;
    return a || b || null;
  }
  let districts = [];                  // {code, name, bbox, geometry, bounds} from /api/v1/districts
  const filters = {company: '', district: '', plate: '', states: new Set(Object.keys(COLORS))};
  let cursor = null, clockOffset = 0, selected = null, trackLine = null, drawn = null;
  const api = window.muckMap = {trucks, drawnCount: 0, updates: 0, positions: {}, trackPoints: 0, selected: null, map};

  // ---- the canvas layer --------------------------------------------------------------
  const canvas = document.createElement('canvas');
  canvas.className = 'muck-trucks';
  Object.assign(canvas.style, {position: 'absolute', left: 0, top: 0, zIndex: 450, pointerEvents: 'none'});
  map.getContainer().appendChild(canvas);
  const ctx = canvas.getContext('2d');
  let frame = 0;
  function schedule() { if (!frame) frame = requestAnimationFrame(draw); }
  function resize() {
    const size = map.getSize(), ratio = window.devicePixelRatio || 1;
    canvas.width = size.x * ratio; canvas.height = size.y * ratio;
    canvas.style.width = size.x + 'px'; canvas.style.height = size.y + 'px';
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    schedule();
  }
  map.on('resize', resize);
  map.on('move zoom viewreset', schedule);
  map.on('zoomstart', () => { canvas.style.visibility = 'hidden'; });
  map.on('zoomend', () => { canvas.style.visibility = 'visible'; schedule(); });

  function stateOf(t, now) {
    if (now - t.fix_ms > cfg.darkAfterMs) return 'dark';
    if (t.violation) return 'violation';    // an open violation (not dismissed or withdrawn)
    if (t.load === 'half' || t.load === 'full') return 'loaded';
    if (t.load === 'empty') return 'empty';
    return 'unknown';
  }

  function visible(t, state) {
    if (!filters.states.has(state)) return false;
    if (filters.company && String(t.company_id) !== filters.company) return false;
    if (filters.plate && t.plate.indexOf(filters.plate) < 0) return false;
    if (filters.district && t.district !== filters.district) return false;
    return true;
  }

  function draw() {
    frame = 0;
    const size = map.getSize();
    ctx.clearRect(0, 0, size.x, size.y);
    const now = Date.now() + clockOffset;
    const xs = [], ys = [], ids = [];
    const counts = {total: 0, shown: 0, dark: 0};
    const zoom = map.getZoom();
    const r = zoom >= 15 ? 7 : zoom >= 12 ? 5 : 3;
    for (const t of trucks.values()) {
      counts.total++;
      const state = stateOf(t, now);
      if (state === 'dark') counts.dark++;
      if (!visible(t, state)) continue;
      const p = map.latLngToContainerPoint([t.lat, t.lon]);
      if (p.x < -10 || p.y < -10 || p.x > size.x + 10 || p.y > size.y + 10) continue;
      counts.shown++;
      xs.push(p.x); ys.push(p.y); ids.push(t.id);
      ctx.fillStyle = COLORS[state];
      ctx.beginPath();
      if (t.heading !== null && t.heading !== undefined && r > 3) {
        const a = t.heading * Math.PI / 180;  // 0 = north, clockwise
        const s = Math.sin(a), c = Math.cos(a);
        ctx.moveTo(p.x + s * r * 1.6, p.y - c * r * 1.6);
        ctx.lineTo(p.x - s * r + c * r * 0.9, p.y + c * r + s * r * 0.9);
        ctx.lineTo(p.x - s * r - c * r * 0.9, p.y + c * r - s * r * 0.9);
        ctx.closePath();
      } else {
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      }
      ctx.fill();
      const list = listOf(t);
      if (list) {  // the company (or truck) is on a credit list: a ring in the list's colour
        ctx.strokeStyle = LIST_COLORS[list]; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(p.x, p.y, r + 2.5, 0, 2 * Math.PI); ctx.stroke();
      }
      if (selected === t.id) {
        ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(p.x, p.y, r + 5, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    drawn = {xs, ys, ids};
    api.drawnCount = ids.length;
    api.positions = {};
    for (let i = 0; i < ids.length; i++) api.positions[ids[i]] = [xs[i], ys[i]];
    document.getElementById('stats').textContent =
      counts.total + ' ' + T.trucks + ' · ' + counts.shown + ' ' + T.shown + ' · ' + counts.dark + ' ' + T.dark;
  }

  // ---- districts -----------------------------------------------------------------------
  // Point in polygon (even-odd over every ring of a part, so holes are outside), in the
  // display CRS of both the trucks and the boundaries.
  function inRing(x, y, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function inGeometry(x, y, g) {
    const parts = g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : [];
    for (const rings of parts) {
      let inside = false;
      for (const ring of rings) if (inRing(x, y, ring)) inside = !inside;
      if (inside) return true;
    }
    return false;
  }
  function districtAt(lon, lat) {
    if (lon === null || lat === null || lon === undefined || lat === undefined) return null;
    for (const d of districts) {
      const b = d.bbox;
      if (lon < b[0] || lat < b[1] || lon > b[2] || lat > b[3]) continue;
      if (inGeometry(lon, lat, d.geometry)) return d.code;
    }
    return null;
  }
  api.districtAt = districtAt;

  function bboxOf(g) {
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    const parts = g.type === 'Polygon' ? [g.coordinates] : g.coordinates;
    for (const rings of parts) for (const [x, y] of rings[0]) {
      b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y); b[2] = Math.max(b[2], x); b[3] = Math.max(b[3], y);
    }
    return b;
  }

  async function loadDistricts() {
    const data = await C.getJSON(urls.districts);
    const layer = L.featureGroup();
    districts = data.features.map((f) => {
      const outline = L.geoJSON(f, {style: () => ({color: '#5e35b1', weight: 2, dashArray: '6 4', fill: false})});
      outline.bindTooltip(document.createTextNode(f.properties.name + ' (' + f.properties.code + ')'));  // text, not HTML
      layer.addLayer(outline);
      return {code: f.properties.code, name: f.properties.name, geometry: f.geometry, bbox: bboxOf(f.geometry),
              bounds: outline.getBounds()};
    });
    for (const t of trucks.values()) t.district = districtAt(t.lon, t.lat);
    const sel = document.getElementById('f-district');
    districts.forEach((d) => sel.add(new Option(d.name, d.code)));
    if (districts.length) {
      layer.addTo(map);
      map.muckLayers.addOverlay(layer, T.districts);
    }
    api.districtsLoaded = districts.length;
    schedule();
    return layer;
  }

  // ---- data --------------------------------------------------------------------------
  function apply(payload) {
    const cols = payload.trucks, n = payload.count;
    for (let i = 0; i < n; i++) {
      const id = cols.id[i];
      if (!cols.active[i]) { trucks.delete(id); continue; }
      const old = trucks.get(id), lon = cols.lon[i], lat = cols.lat[i];
      // the district of the truck's current position, looked up again only when it moved
      const district = old && old.lon === lon && old.lat === lat ? old.district : districtAt(lon, lat);
      trucks.set(id, {id, plate: cols.plate[i], company_id: cols.company_id[i], lon, lat, district,
        speed: cols.speed[i], heading: cols.heading[i], load: cols.load[i], lid: cols.lid[i], lift: cols.lift[i],
        acc: cols.acc[i], fix_ms: cols.fix_ms[i], alarms: cols.alarms[i], violation: !!(cols.violation && cols.violation[i])});
    }
    let added = false;
    for (const [cid, name] of Object.entries(payload.companies)) {
      if (!(cid in companies)) { companies[cid] = name; added = true; }
    }
    if (added) fillCompanies();
    if (payload.listed) { listed = payload.listed; api.listed = listed; }
    clockOffset = payload.server_ms - Date.now();
    api.serverMs = payload.server_ms;
    cursor = payload.cursor;
    api.updates++;
    document.getElementById('updated').textContent = T.updated + ' ' + C.fmtTime(payload.server_ms);
    if (selected !== null && trucks.has(selected)) showInfo(trucks.get(selected), false);
    schedule();
  }

  // ---- the view -----------------------------------------------------------------------
  // On the first visit the map fits the city: the bounds of its zones, districts and trucks
  // (not a fixed centre). After that the user's view is kept: data refreshes never move the
  // map, and a reload of the page restores the last view (sessionStorage, per tab).
  const VIEW_KEY = 'muck.livemap.view';
  function savedView() {
    try { return JSON.parse(window.sessionStorage.getItem(VIEW_KEY)); } catch (e) { return null; }
  }
  const saved = savedView();
  if (saved && isFinite(saved.lat) && isFinite(saved.lng) && isFinite(saved.zoom)) {
    map.setView([saved.lat, saved.lng], saved.zoom, {animate: false});
    api.view = 'restored';
  }
  map.on('moveend', () => {
    const c = map.getCenter();
    try { window.sessionStorage.setItem(VIEW_KEY, JSON.stringify({lat: c.lat, lng: c.lng, zoom: map.getZoom()})); } catch (e) { /* private mode */ }
  });
  function fitCity(layers) {
    if (api.view) return;               // restored, or already fitted
    const bounds = L.latLngBounds([]);
    for (const layer of layers) if (layer && layer.getLayers().length) bounds.extend(layer.getBounds());
    for (const t of trucks.values()) if (t.lat !== null && t.lon !== null) bounds.extend([t.lat, t.lon]);
    if (!bounds.isValid()) return;
    map.fitBounds(bounds, {padding: [20, 20], maxZoom: 16, animate: false});
    api.view = 'fitted';
  }

  async function poll() {
    try {
      const url = urls.live + (cursor ? '?since=' + encodeURIComponent(cursor) : '');
      apply(await C.getJSON(url));
    } catch (err) {
      document.getElementById('updated').textContent = T.error + ' (' + err.message + ')';
    }
    setTimeout(poll, cfg.pollMs);
  }
  api.pollNow = poll;

  function fillCompanies() {
    const sel = document.getElementById('f-company');
    const current = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    Object.entries(companies).sort((a, b) => a[1].localeCompare(b[1], 'zh')).forEach(([id, name]) => sel.add(new Option(name, id)));
    sel.value = current;
  }

  // ---- selection ---------------------------------------------------------------------
  function label(v) { return v === null || v === undefined ? T.none : (T[v] || v); }

  async function showInfo(t, loadTrack) {
    const rows = [[T.plate, t.plate], [T.company, companies[t.company_id] || T.none],
      [T.speed, t.speed === null ? T.none : t.speed.toFixed(0) + ' km/h'], [T.heading, t.heading === null ? T.none : t.heading + '°'],
      [T.lid, label(t.lid)], [T.lift, label(t.lift)], [T.load, label(t.load)], [T.lastReport, C.fmtTime(t.fix_ms)]];
    if (t.alarms && t.alarms.length) rows.push([T.alarms, t.alarms.join(', ')]);
    const list = listOf(t);
    if (list) rows.push([T.creditList, T.lists[list]]);
    const el = document.getElementById('truck-info');
    el.innerHTML = '';
    const table = document.createElement('table');
    for (const [k, v] of rows) {
      const tr = table.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v;
    }
    el.appendChild(table);
    const link = document.createElement('a');
    link.href = urls.trackPage.replace('/0/', '/' + t.id + '/');
    link.textContent = T.track; link.id = 'track-link';
    el.appendChild(link);
    const note = document.createElement('p'); note.className = 'muted'; note.id = 'track-note';
    el.appendChild(note);
    if (!loadTrack) return;
    const data = await C.getJSON(urls.trackApi.replace('/0/', '/' + t.id + '/'));
    if (trackLine) map.removeLayer(trackLine);
    const pts = data.points.lat.map((lat, i) => [lat, data.points.lon[i]]);
    trackLine = L.polyline(pts, {color: '#000', weight: 3, opacity: 0.7}).addTo(map);
    api.trackPoints = pts.length;
    note.textContent = T.lastHour + ': ' + pts.length + ' ' + T.points;
  }

  function select(id) {
    selected = id; api.selected = id;
    if (trackLine) { map.removeLayer(trackLine); trackLine = null; api.trackPoints = 0; }
    if (id === null) { document.getElementById('truck-info').innerHTML = ''; schedule(); return; }
    showInfo(trucks.get(id), true);
    schedule();
  }
  api.select = select;

  map.on('click', (e) => {
    if (!drawn) return;
    const {x, y} = e.containerPoint;
    let best = null, bestD = 12 * 12;
    for (let i = 0; i < drawn.ids.length; i++) {
      const dx = drawn.xs[i] - x, dy = drawn.ys[i] - y, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = drawn.ids[i]; }
    }
    select(best);
  });

  // ---- filters -----------------------------------------------------------------------
  document.getElementById('f-company').addEventListener('change', (e) => { filters.company = e.target.value; schedule(); });
  document.getElementById('f-plate').addEventListener('input', (e) => { filters.plate = e.target.value.trim().toUpperCase(); schedule(); });
  document.getElementById('f-district').addEventListener('change', (e) => {
    filters.district = e.target.value;
    const d = districts.find((x) => x.code === filters.district);
    if (d) map.fitBounds(d.bounds, {animate: false});
    schedule();
  });
  document.querySelectorAll('#f-states input').forEach((box) => box.addEventListener('change', () => {
    filters.states = new Set([...document.querySelectorAll('#f-states input:checked')].map((b) => b.value));
    schedule();
  }));

  resize();
  setInterval(schedule, 10000);   // trucks go dark as time passes, without any new data
  const zonesLoaded = C.loadZones(map, urls.zones).then((features) => {
    api.zonesLoaded = features.length;
    return features.layers;
  }).catch((err) => { console.error(err); return []; });
  const districtsLoaded = loadDistricts().catch((err) => { console.error(err); return null; });
  const firstPoll = poll();
  Promise.all([zonesLoaded, districtsLoaded, firstPoll]).then(([zoneLayers, districtLayer]) =>
    fitCity([...zoneLayers, districtLayer]));
})();
