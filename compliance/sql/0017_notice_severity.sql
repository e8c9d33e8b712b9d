-- A third, lowest severity: `notice`, for what deserves a look but no alert (an empty truck
-- parked in a site whose terminal fell silent: docs/compliance.md, going dark). Ranked
-- notice < minor < serious wherever two findings of one episode are merged.
ALTER TABLE violations DROP CONSTRAINT violations_severity_check;
ALTER TABLE violations ADD CONSTRAINT violations_severity_check
    CHECK (severity IN ('notice', 'minor', 'serious'));
