SELECT
    CAST(participant_id AS VARCHAR) AS participant_id,
    upper(trim(CAST(nric AS VARCHAR))) AS nric,
    CAST(full_name AS VARCHAR) AS full_name,
    CAST(gender AS VARCHAR) AS gender,
    CAST(date_of_birth AS DATE) AS date_of_birth,
    CAST(phone AS VARCHAR) AS phone,
    lpad(CAST(postal_code AS VARCHAR), 6, '0') AS postal_code,
    CAST(enrolled_on AS DATE) AS enrolled_on
FROM raw_participants
