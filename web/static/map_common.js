/* Shared by the live map and the track replay: the base map, tiles and zone layers. */
(function () {
  'use strict';
  const cfg = window.MUCK.config;
  const ZONE_STYLE = {
    site: {color: '#6d4c41', fillOpacity: 0.15}, disposal: {color: '#00897b', fillOpacity: 0.15},
    route: {color: '#3949ab', weight: 3, opacity: 0.6}, restricted: {color: '#c62828', fillOpacity: 0.12, dashArray: '4'},
    speed: {color: '#f9a825', fillOpacity: 0.08}
  };

  function createMap(el) {
    // Leaflet's default CRS; positions arrive already converted to the tiles' CRS by the server.
    const map = L.map(el, {preferCanvas: true, zoomControl: true, maxZoom: cfg.tileMaxZoom || 18})
      .setView(cfg.center, 12);
    if (cfg.tileUrl) {
      L.tileLayer(cfg.tileUrl, {maxZoom: cfg.tileMaxZoom || 18, attribution: cfg.tileAttribution || ''}).addTo(map);
    }
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
      layer.bindTooltip((f.properties.name || f.properties.code) + (f.properties.district ? ' · ' + f.properties.district : ''));
      layer.feature = f;
      groups[kind].addLayer(layer);
    }
    const overlays = {};
    const labels = (window.MUCK && window.MUCK.i18n && window.MUCK.i18n.zoneKinds) || {};
    for (const [kind, group] of Object.entries(groups)) { group.addTo(map); overlays[labels[kind] || kind] = group; }
    if (Object.keys(overlays).length) L.control.layers(null, overlays, {collapsed: false}).addTo(map);
    return features;
  }

  function fmtTime(ms) {
    if (!ms) return '-';
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  window.MuckCommon = {createMap, getJSON, loadZones, fmtTime, ZONE_STYLE};
})();
