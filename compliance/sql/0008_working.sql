-- "Working": moving (at least moving_kmh), loaded or ignition on. The SQL twin of
-- compliance.frame.is_working, the one definition the rules and the engine use; the going-dark
-- sweep (compliance/sweep.py) asks it of each truck's last fix in truck_state, and
-- tests/compliance/test_working.py checks that both answer alike for every input.
-- A single expression, neither STRICT nor volatile, so that the planner inlines it (an
-- unknown load, speed or ignition alone proves nothing, as in Python).
CREATE FUNCTION compliance_working(load load_state, speed_kmh double precision, acc boolean,
                                   moving_kmh double precision)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT load IN ('half', 'full') OR speed_kmh >= moving_kmh OR acc $$;
