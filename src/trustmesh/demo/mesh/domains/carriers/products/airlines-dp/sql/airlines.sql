SELECT
    CAST(carrier AS VARCHAR) AS carrier,
    CAST(name AS VARCHAR) AS name
FROM raw_airlines
