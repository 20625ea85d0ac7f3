SELECT
    CAST(commuter_id AS VARCHAR) AS commuter_id,
    upper(trim(CAST(nric AS VARCHAR))) AS nric,
    CAST(full_name AS VARCHAR) AS full_name,
    CAST(date_of_birth AS DATE) AS date_of_birth,
    CAST(phone AS VARCHAR) AS phone,
    lpad(CAST(postal_code AS VARCHAR), 6, '0') AS postal_code,
    CAST(card_type AS VARCHAR) AS card_type
FROM raw_commuters
