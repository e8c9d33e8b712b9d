-- 一事不二罚 (one act, one charge): a violation whose conduct another, heavier charge of the
-- same truck already covers points at it (compliance/concurrence.py; the policy per kind pair
-- is in docs/compliance.md). Kept, listed and evidenced as it was found, but charged as part
-- of that one: credit scoring and case handling count the violation it points to.
ALTER TABLE violations ADD COLUMN absorbed_by bigint REFERENCES violations (id);
CREATE INDEX violations_absorbed_by_idx ON violations (absorbed_by) WHERE absorbed_by IS NOT NULL;
