SELECT
    CAST(a.participant_id AS VARCHAR) AS participant_id,
    upper(trim(CAST(p.nric AS VARCHAR))) AS nric,
    CAST(a.activity_date AS DATE) AS activity_date,
    count(*) AS sessions,
    CAST(sum(a.steps) AS BIGINT) AS steps,
    CAST(sum(a.active_minutes) AS BIGINT) AS active_minutes,
    CAST(sum(a.calories) AS BIGINT) AS calories
FROM raw_activities AS a
JOIN raw_participants AS p ON p.participant_id = a.participant_id
GROUP BY a.participant_id, p.nric, a.activity_date
