/* Shared by the live map and the track replay: the base map, tiles and zone layers. */
(function () {
  'use strict';
  const cfg = window.MUCK.config;
  const ZONE_STYLE = {
    site: {color: '#6d4c41', fillOpacity: 0.15}, disposal: {color: '#00897b', fillOpacity: 0.15},
    route: {color: '#3949ab', weight: 3, opacity: 0.6}, restricted: {color: '#c62828', fillOpacity: 0.12, dashArray: '4'},
    speed: {color: '#f9a825', fillOpacity: 0.08}
  };

  // The offline base layer (/api/v1/basemap: the city's streets, water and green areas from
  // the database), drawn by class on a canvas under the zones.
  const BASE_STYLE = {
    expressway: {color: '#e8892b', weight: 5}, urban_expressway: {color: '#f2c14e', weight: 4},
    arterial: {color: '#ffffff', weight: 4}, other: {color: '#ffffff', weight: 3},
    path: {color: '#b0a89c', weight: 1, dashArray: '3 3'}, rail: {color: '#777777', weight: 2, dashArray: '8 4'},
    river: {color: '#8cc4e0', weight: 4},
    water: {color: '#8cc4e0', weight: 1, fillColor: '#aad3df', fillOpacity: 1},
    green: {color: '#b5d29e', weight: 1, fillColor: '#cdebb0', fillOpacity: 1},
    built_up: {color: '#d9d0c9', weight: 0, fillColor: '#e6ded6', fillOpacity: 1}
  };
  const BASE_BACKGROUND = '#ebe6df';

  function basemapLayer(map) {
    map.createPane('basemap').style.zIndex = 150;  // under the tiles' pane (200) and the zones
    const renderer = L.canvas({pane: 'basemap', padding: 0.5});
    const layer = L.layerGroup();
    const state = window.muckBasemap = {features: 0, requests: 0, truncated: false};
    let loaded = null, seq = 0;
    async function refresh() {
      if (!map.hasLayer(layer)) return;
      const zoom = map.getZoom(), view = map.getBounds();
      if (loaded && loaded.zoom === zoom && loaded.bounds.contains(view)) return;
      const b = view.pad(0.5), mine = ++seq;
      const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]
        .map((v, i) => Math.max(i % 2 ? -90 : -180, Math.min(i % 2 ? 90 : 180, v)).toFixed(5)).join(',');
      state.requests++;
      const data = await getJSON(cfg.basemapUrl + '?bbox=' + bbox + '&zoom=' + zoom);
      if (mine !== seq) return;          // a newer view asked meanwhile
      layer.clearLayers();
      // the least important first, so that expressways are drawn over streets
      const features = data.features.slice().reverse();
      L.geoJSON({type: 'FeatureCollection', features}, {
        renderer, pane: 'basemap', interactive: false,
        style: (f) => BASE_STYLE[f.properties.class] || BASE_STYLE.other
      }).addTo(layer);
      loaded = {zoom, bounds: b};
      state.features = features.length; state.truncated = data.truncated; state.zoom = zoom;
    }
    const safeRefresh = () => refresh().catch((err) => console.error(err));
    map.on('moveend', safeRefresh);
    layer.on('add', () => { map.getContainer().style.background = BASE_BACKGROUND; loaded = null; safeRefresh(); });
    layer.on('remove', () => { map.getContainer().style.background = ''; });
    return layer;
  }

  function createMap(el) {
    // Leaflet's default CRS; positions arrive already converted to the tiles' CRS by the server.
    const map = L.map(el, {preferCanvas: true, zoomControl: true, maxZoom: cfg.tileMaxZoom || 18})
      .setView(cfg.center, 12);
    // Base layers: the configured tiles (shown first), and the offline streets, which are the
    // map's background when no tile URL is configured. One switcher holds them and the
    // overlays (zones, districts: addOverlay).
    const T = cfg.layerNames || {};
    const bases = {};
    const streets = basemapLayer(map);
    if (cfg.tileUrl) {
      const tiles = L.tileLayer(cfg.tileUrl, {maxZoom: cfg.tileMaxZoom || 18, attribution: cfg.tileAttribution || ''});
      bases[T.tiles || 'Tiles'] = tiles;
      tiles.addTo(map);
    } else {
      streets.addTo(map);
    }
    bases[T.streets || 'Streets (offline)'] = streets;
    map.muckLayers = L.control.layers(bases, null, {collapsed: false}).addTo(map);
    L.control.scale({imperial: false}).addTo(map);
    return map;
  }

  async function getJSON(url) {
    const resp = await fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}});
    if (!resp.ok) throw new Error(url + ': HTTP ' + resp.status);
    return resp.json();
  }

  async function loadZones(map, zonesUrl) {
    const groups = {};
    const features = [];
    let url = zonesUrl + '?per_page=500';
    while (url) {
      const page = await getJSON(url);
      features.push(...page.features);
      url = page.next;
    }
    for (const f of features) {
      const kind = f.properties.kind;
      groups[kind] = groups[kind] || L.featureGroup();
      const style = ZONE_STYLE[kind] || {};
      let layer;
      if (f.geometry.type === 'Point' && f.properties.radius_m) {
        const [lon, lat] = f.geometry.coordinates;
        layer = L.circle([lat, lon], Object.assign({radius: f.properties.radius_m}, style));
      } else {
        layer = L.geoJSON(f, {style: () => style});
      }
      // A text node, never a string: Leaflet puts a string tooltip in as HTML, and zone
      // names are typed by administrators and imported from files (stored XSS).
      layer.bindTooltip(document.createTextNode((f.properties.name || f.properties.code) + (f.properties.district ? ' · ' + f.properties.district : '')));
      layer.feature = f;
      groups[kind].addLayer(layer);
    }
    const overlays = {};
    const labels = (window.MUCK && window.MUCK.i18n && window.MUCK.i18n.zoneKinds) || {};
    for (const [kind, group] of Object.entries(groups)) { group.addTo(map); overlays[labels[kind] || kind] = group; }
    for (const [label, group] of Object.entries(overlays)) map.muckLayers.addOverlay(group, label);
    features.layers = Object.values(groups);  // for fitting the view to them
    return features;
  }

  // Times in the city's zone (cfg.timezone), labelled with its UTC offset, whatever zone the
  // browser is in: the same form as the server's (web/times.py), "2026-12-03 15:04:05 (UTC+8)".
  const zoneFormat = new Intl.DateTimeFormat('en-US', {
    timeZone: cfg.timezone || 'UTC', hourCycle: 'h23', year: 'numeric', month: '2-digit',
    day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit'});

  function offsetLabel(minutes) {
    if (!minutes) return 'UTC';
    const a = Math.abs(minutes), rest = a % 60;
    return 'UTC' + (minutes > 0 ? '+' : '-') + Math.floor(a / 60) + (rest ? ':' + String(rest).padStart(2, '0') : '');
  }

  function fmtTime(ms) {
    if (!ms) return '-';
    const p = {};
    for (const part of zoneFormat.formatToParts(new Date(ms))) p[part.type] = part.value;
    // the zone's offset at that instant: its wall clock read as UTC, minus the instant
    const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    const offset = Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
    return p.year + '-' + p.month + '-' + p.day + ' ' + p.hour + ':' + p.minute + ':' + p.second +
      ' (' + offsetLabel(offset) + ')';
  }

  window.MuckCommon = {createMap, getJSON, loadZones, fmtTime, ZONE_STYLE};
})();
