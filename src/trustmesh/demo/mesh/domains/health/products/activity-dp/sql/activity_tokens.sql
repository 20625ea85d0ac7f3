-- Tokenised for the active-commuting linkage: the NRIC never leaves the health domain, only its keyed token.
SELECT
    person_token('active-commuting', p.nric) AS person_token,
    CAST(count(DISTINCT CAST(a.activity_date AS DATE)) AS BIGINT) AS active_days,
    CAST(sum(a.active_minutes) AS BIGINT) AS active_minutes
FROM raw_activities AS a
JOIN raw_participants AS p ON p.participant_id = a.participant_id
GROUP BY person_token('active-commuting', p.nric)
