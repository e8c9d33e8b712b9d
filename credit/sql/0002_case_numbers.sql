-- The yearly sequences behind case numbers and proposed decision document numbers
-- (credit/numbering.py): one row per series and year, incremented in the transaction that
-- uses the number, so a rolled-back case leaves no gap and two officers never get the same.
CREATE TABLE credit_case_numbers (
    series  text NOT NULL CHECK (series IN ('case', 'decision')),
    year    integer NOT NULL,
    last    integer NOT NULL CHECK (last >= 0),
    PRIMARY KEY (series, year)
);
