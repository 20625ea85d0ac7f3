-- Tokenised for the active-commuting linkage: the NRIC never leaves the commuter domain, only its keyed token.
SELECT
    person_token('active-commuting', c.nric) AS person_token,
    CAST(count(*) AS BIGINT) AS trips,
    CAST(count(*) FILTER (WHERE t.mode = 'mrt') AS BIGINT) AS rail_trips
FROM raw_trips AS t
JOIN raw_commuters AS c ON c.commuter_id = t.commuter_id
GROUP BY person_token('active-commuting', c.nric)
