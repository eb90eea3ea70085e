-- Everything the memori extension defines in the current database, one canonical line per
-- fact, with no OIDs: the upgrade test compares this after ALTER EXTENSION memori UPDATE with
-- the same listing from a fresh install (they must be identical). Privileges that
-- memori_grant() gave to roles (recorded in memori_roles) are data, not schema: left out.
WITH granted AS (
    SELECT pg_catalog.quote_ident(role_name) || '=' AS prefix FROM memori_roles
), ext AS (
    SELECT oid, extversion, extconfig, extcondition FROM pg_catalog.pg_extension WHERE extname = 'memori'
), members AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), tables AS (
    SELECT c.oid FROM pg_catalog.pg_class c JOIN members m ON m.classid = 'pg_catalog.pg_class'::regclass AND m.objid = c.oid
     WHERE c.relkind IN ('r', 'p')
)
SELECT line FROM (
    SELECT 'version ' || extversion AS line FROM ext
    UNION ALL
    SELECT 'dumped ' || cfg::regclass || ' where ' || coalesce(cond, '')
      FROM ext, unnest(extconfig, extcondition) AS u(cfg, cond)
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, 0) FROM members
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a WHERE NOT EXISTS (SELECT 1 FROM granted g WHERE a::text LIKE g.prefix || '%')), '-')
           || ' comment=' || coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '-')
           || E'\n' || pg_catalog.pg_get_functiondef(p.oid)
      FROM pg_catalog.pg_proc p JOIN members m ON m.classid = 'pg_catalog.pg_proc'::regclass AND m.objid = p.oid
     WHERE p.prokind IN ('f', 'p')
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
           || ' options=' || coalesce(c.reloptions::text, '-') || ' acl=' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) a WHERE NOT EXISTS (SELECT 1 FROM granted g WHERE a::text LIKE g.prefix || '%')), '-')
           || ' rls=' || c.relrowsecurity || ' force_rls=' || c.relforcerowsecurity
           || ' comment=' || coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '-')
      FROM pg_catalog.pg_class c JOIN members m ON m.classid = 'pg_catalog.pg_class'::regclass AND m.objid = c.oid
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass || ' #' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum)
           || ' ' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
           || ' default=' || coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '-')
           || ' acl=' || coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x WHERE NOT EXISTS (SELECT 1 FROM granted g WHERE x::text LIKE g.prefix || '%')), '-')
           || ' comment=' || coalesce(pg_catalog.col_description(a.attrelid, a.attnum), '-')
      FROM pg_catalog.pg_attribute a JOIN tables t ON t.oid = a.attrelid
      LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid) || ' valid=' || i.indisvalid
           || ' options=' || coalesce(c.reloptions::text, '-')
           || ' comment=' || coalesce(pg_catalog.obj_description(i.indexrelid, 'pg_class'), '-')
      FROM pg_catalog.pg_index i JOIN tables t ON t.oid = i.indrelid JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
    UNION ALL
    SELECT 'constraint ' || co.conrelid::regclass || ' ' || co.conname || ' ' || pg_catalog.pg_get_constraintdef(co.oid)
           || ' comment=' || coalesce(pg_catalog.obj_description(co.oid, 'pg_constraint'), '-')
      FROM pg_catalog.pg_constraint co JOIN tables t ON t.oid = co.conrelid
    UNION ALL
    SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(tg.oid) || ' enabled=' || tg.tgenabled::text
      FROM pg_catalog.pg_trigger tg JOIN tables t ON t.oid = tg.tgrelid WHERE NOT tg.tgisinternal
    UNION ALL
    SELECT 'policy ' || po.polrelid::regclass || ' ' || po.polname || ' cmd=' || po.polcmd::text
           || ' permissive=' || po.polpermissive
           || ' roles=' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
                              FROM unnest(po.polroles) r)
           || ' using=' || coalesce(pg_catalog.pg_get_expr(po.polqual, po.polrelid), '-')
           || ' check=' || coalesce(pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid), '-')
           || ' comment=' || coalesce(pg_catalog.obj_description(po.oid, 'pg_policy'), '-')
      FROM pg_catalog.pg_policy po JOIN tables t ON t.oid = po.polrelid
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass || ' ' || pg_catalog.format_type(s.seqtypid, NULL)
           || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' max=' || s.seqmax
           || ' min=' || s.seqmin || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
      FROM pg_catalog.pg_sequence s JOIN members m ON m.classid = 'pg_catalog.pg_class'::regclass AND m.objid = s.seqrelid
) facts
ORDER BY line;
