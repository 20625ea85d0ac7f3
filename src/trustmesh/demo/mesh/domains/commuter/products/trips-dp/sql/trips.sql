SELECT
    CAST(trip_id AS BIGINT) AS trip_id,
    CAST(commuter_id AS VARCHAR) AS commuter_id,
    CAST(tap_in_at AS TIMESTAMP) AS tap_in_at,
    CAST(tap_out_at AS TIMESTAMP) AS tap_out_at,
    CAST(date_diff('second', CAST(tap_in_at AS TIMESTAMP), CAST(tap_out_at AS TIMESTAMP)) AS DOUBLE) / 60
        AS duration_minutes,
    CAST(origin_station AS VARCHAR) AS origin_station,
    CAST(destination_station AS VARCHAR) AS destination_station,
    CAST(mode AS VARCHAR) AS mode,
    CAST(fare AS DECIMAL(6, 2)) AS fare
FROM raw_trips
