// The page's data comes in a JSON block (<script type="application/json" id="muck-data">),
// never in an inline script: the Content-Security-Policy allows scripts from /static only.
window.MUCK = JSON.parse(document.getElementById('muck-data').textContent);
