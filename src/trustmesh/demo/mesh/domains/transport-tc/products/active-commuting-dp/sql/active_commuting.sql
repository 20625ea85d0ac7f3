-- Joined on the linkage token only; a group is published only when it has at least 5 people (k = 5).
WITH linked AS (
    SELECT
        a.person_token,
        a.active_minutes,
        t.trips,
        CASE WHEN t.rail_trips * 2 >= t.trips THEN 'mrt' ELSE 'bus' END AS main_mode
    FROM health."activity-dp".activity_tokens AS a
    JOIN commuter."trips-dp".trip_tokens AS t ON t.person_token = a.person_token
)
SELECT
    CASE WHEN trips < 10 THEN 'under 10' WHEN trips < 30 THEN '10 to 29' ELSE '30 or more' END AS journeys_band,
    main_mode,
    CASE WHEN active_minutes < 600 THEN 'under 600' WHEN active_minutes < 1800 THEN '600 to 1799'
         ELSE '1800 or more' END AS activity_band,
    count(DISTINCT person_token) AS people,
    round(avg(active_minutes), 1) AS mean_active_minutes,
    round(avg(trips), 1) AS mean_journeys
FROM linked
GROUP BY 1, 2, 3
HAVING count(DISTINCT person_token) >= 5
