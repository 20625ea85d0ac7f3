WITH observations AS (
    SELECT
        CAST(origin AS VARCHAR) AS origin,
        CAST(year AS INTEGER) AS year,
        CAST(month AS INTEGER) AS month,
        CAST(day AS INTEGER) AS day,
        CAST(hour AS INTEGER) AS hour,
        CAST(temp AS DOUBLE) AS temp,
        CAST(dewp AS DOUBLE) AS dewp,
        CAST(humid AS DOUBLE) AS humid,
        CAST(wind_dir AS DOUBLE) AS wind_dir,
        CAST(wind_speed AS DOUBLE) AS wind_speed,
        CAST(wind_gust AS DOUBLE) AS wind_gust,
        CAST(precip AS DOUBLE) AS precip,
        CAST(pressure AS DOUBLE) AS pressure,
        CAST(visib AS DOUBLE) AS visib,
        CAST(time_hour AS TIMESTAMP WITH TIME ZONE) AS time_hour
    FROM raw_weather
)
SELECT
    origin,
    year,
    month,
    day,
    hour,
    temp,
    dewp,
    humid,
    wind_dir,
    wind_speed,
    wind_gust,
    precip,
    pressure,
    visib,
    time_hour,
    CASE
        WHEN visib < 1 THEN 'low-visibility'
        WHEN precip > 0 AND temp <= 34 THEN 'snow'
        WHEN precip > 0 THEN 'rain'
        WHEN wind_speed >= 20 OR wind_gust >= 30 THEN 'windy'
        WHEN visib < 5 THEN 'haze'
        ELSE 'clear'
    END AS condition
FROM observations
