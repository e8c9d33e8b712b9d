-- Wakes the alert dispatcher (alerts/dispatcher.py LISTENs on 'violation_events') as soon as
-- a transaction that recorded violation events commits, instead of it polling. A statement
-- trigger: the writer inserts a batch's events in one statement, so a batch costs one
-- NOTIFY (and PostgreSQL folds identical notifications of one transaction into one), never
-- one per row; a batch that found nothing inserts no event and notifies nothing.
CREATE FUNCTION violation_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('violation_events', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER violation_events_notify
    AFTER INSERT ON violation_events
    FOR EACH STATEMENT EXECUTE FUNCTION violation_events_notify();
