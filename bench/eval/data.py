"""memori's retrieval eval: a labelled set of Text2SQL-style memories and questions.

Written for this project. Ten users, each with the schema memories of their own database
(tables, columns, foreign keys), rules for how they want SQL written, business definitions and
a few facts; questions of three kinds:

- identifier: names a table, column or dotted identifier exactly ("What does
  invoices.customer_id reference?"). Several memories of the same user share words (every
  foreign key "references"; two tables have customer_id), so only the exact identifier tells
  them apart.
- paraphrase: asks for a rule or definition in other words ("How should joins be written?").
- negative: unrelated to the user's memories; nothing should come back above the threshold.

`memories()` and `queries()` expand the tables below; every memory has a key (user/kind/name)
and every question lists the keys it should find (none for negatives).
"""

# user: (tables {name: (what it holds, {column: meaning})}, foreign keys [(table, column, target)],
#        rules [(rule, question)], definitions [(term, definition, question)], facts [..])
DOMAINS = {
    "ava": (
        {
            "customers": ("one row per customer account", {"signup_source": "the marketing channel the customer came from", "vip_tier": "the loyalty level from 0 to 3"}),
            "orders": ("one row per checkout", {"total_cents": "the order total in cents including tax", "placed_at": "when the customer paid, in UTC"}),
            "invoices": ("the billing documents sent to customers", {"due_on": "the payment deadline", "pdf_url": "where the rendered invoice is stored"}),
            "refunds": ("money returned to customers", {"reason_code": "why the money went back, e.g. DAMAGED", "refunded_cents": "the amount returned in cents"}),
        },
        [("orders", "customer_id", "customers"), ("invoices", "customer_id", "customers"), ("invoices", "order_id", "orders"), ("refunds", "order_id", "orders")],
        [("Always use explicit JOIN syntax, never comma joins", "How should tables be joined in my queries?"),
         ("Prefer CTEs over nested subqueries", "Should I nest subqueries or use WITH clauses?"),
         ("Amounts are stored in cents; divide by 100 only in the final SELECT", "When do I convert money to dollars?")],
        [("net revenue", "net revenue is the sum of orders.total_cents minus refunds.refunded_cents", "How do we compute income after returns?"),
         ("active customer", "an active customer placed at least one order in the last 90 days", "Who counts as an engaged buyer?"),
         ("late invoice", "a late invoice is one still unpaid after invoices.due_on", "Which bills are considered overdue?")],
        ["The user is a data analyst on the e-commerce team", "Reports go to the finance director every Monday"],
    ),
    "ben": (
        {
            "patients": ("people registered at the clinic", {"date_of_birth": "the patient's birth date", "insurer_code": "the health insurer's identifier"}),
            "appointments": ("scheduled visits", {"starts_at": "the start of the visit slot", "no_show": "true when the patient did not come"}),
            "prescriptions": ("medication orders written by doctors", {"dosage_mg": "the dose in milligrams", "refills_left": "how many refills remain"}),
            "doctors": ("physicians on staff", {"specialty": "the medical field, e.g. cardiology", "license_no": "the state license number"}),
        },
        [("appointments", "patient_id", "patients"), ("appointments", "doctor_id", "doctors"), ("prescriptions", "patient_id", "patients"), ("prescriptions", "doctor_id", "doctors")],
        [("Never select patient names; use patient_id only", "Can I show people's names in results?"),
         ("Use table aliases of one or two letters", "How short should my table aliases be?"),
         ("Filter out test records where is_test is true", "Should synthetic rows be excluded?")],
        [("no-show rate", "the no-show rate is appointments with no_show true divided by all appointments", "What share of visits were missed?"),
         ("polypharmacy", "polypharmacy means a patient with five or more active prescriptions", "When is someone on too many medicines?"),
         ("new patient", "a new patient had their first appointment in the current month", "Who counts as a first-time visitor?")],
        ["The user works for a cardiology clinic in Lyon", "Data is refreshed from the EHR every night at 2am"],
    ),
    "chen": (
        {
            "flights": ("scheduled flight legs", {"departs_at": "the scheduled departure time in local time", "tail_number": "the aircraft registration"}),
            "bookings": ("seats sold to passengers", {"fare_class": "the booking class letter, e.g. Y or J", "booked_at": "when the ticket was bought"}),
            "passengers": ("travellers with a frequent flyer profile", {"ff_number": "the frequent flyer number", "home_airport": "the IATA code of the home airport"}),
            "delays": ("recorded departure delays", {"delay_minutes": "how late the flight left", "cause_code": "the IATA delay code"}),
        },
        [("bookings", "flight_id", "flights"), ("bookings", "passenger_id", "passengers"), ("delays", "flight_id", "flights"), ("flights", "aircraft_id", "aircraft")],
        [("Times must be converted to UTC before comparing", "How do I compare timestamps from different airports?"),
         ("Use window functions instead of self joins", "What should replace a table joined to itself?"),
         ("Limit exploratory queries to 100 rows", "How many rows should a test query return?")],
        [("load factor", "load factor is seats booked divided by seats available on a flight", "How full are the planes on average?"),
         ("on-time departure", "an on-time departure left less than 15 delay_minutes late", "When is a flight considered punctual?"),
         ("premium cabin", "the premium cabin is fare_class J, C or F", "Which tickets count as business or first?")],
        ["The user is a revenue manager at a regional airline", "The airline hub is Vienna"],
    ),
    "dana": (
        {
            "accounts": ("bank accounts", {"iban": "the international account number", "opened_on": "when the account was opened"}),
            "transactions": ("money movements on accounts", {"amount_minor": "the amount in minor currency units, negative for debits", "booked_on": "the booking date"}),
            "cards": ("payment cards issued on accounts", {"pan_last4": "the last four digits of the card number", "expires_on": "the card expiry date"}),
            "alerts": ("fraud alerts raised by the scoring engine", {"risk_score": "the fraud score from 0 to 1000", "status": "open, dismissed or confirmed"}),
        },
        [("transactions", "account_id", "accounts"), ("cards", "account_id", "accounts"), ("alerts", "transaction_id", "transactions"), ("transactions", "card_id", "cards")],
        [("Never show full IBANs, mask all but the last four characters", "How must account numbers appear in output?"),
         ("Use DATE_TRUNC for monthly grouping", "How do I bucket rows by month?"),
         ("Write keywords in upper case", "Should SQL keywords be capitalised?")],
        [("chargeback", "a chargeback is a transaction reversed by the card network after a dispute", "What is a disputed payment that got pulled back?"),
         ("dormant account", "a dormant account has no transactions for 12 months", "Which accounts have been inactive for a year?"),
         ("high risk alert", "a high risk alert has risk_score of 800 or more", "Which fraud warnings are the most severe?")],
        ["The user works in the fraud team of a bank in Madrid", "The warehouse is Snowflake, mirrored into PostgreSQL"],
    ),
    "eli": (
        {
            "students": ("pupils enrolled at the school", {"grade_level": "the school year from 1 to 12", "enrolled_on": "the enrolment date"}),
            "courses": ("subjects taught each term", {"course_code": "the short code, e.g. MATH101", "credits": "the credit points"}),
            "enrollments": ("which student takes which course", {"final_grade": "the grade from A to F", "withdrawn": "true when the student dropped the course"}),
            "teachers": ("teaching staff", {"hire_date": "when the teacher was hired", "department": "the subject department"}),
        },
        [("enrollments", "student_id", "students"), ("enrollments", "course_id", "courses"), ("courses", "teacher_id", "teachers"), ("students", "homeroom_teacher_id", "teachers")],
        [("Round averages to two decimals", "How precise should mean values be?"),
         ("Order results by the most recent first", "Which order should rows come in by default?"),
         ("Explain each query in one sentence before the SQL", "Should I describe the query before writing it?")],
        [("GPA", "GPA is the credit-weighted mean of final_grade points, A=4 to F=0", "How is a student's grade point average calculated?"),
         ("dropout", "a dropout withdrew from every course in a term", "Who abandoned all their classes?"),
         ("class size", "class size is the number of non-withdrawn enrollments of a course", "How many pupils attend each subject?")],
        ["The user is the data coordinator of a high school district", "Terms run from September to January and February to June"],
    ),
    "farah": (
        {
            "shipments": ("parcels sent to customers", {"tracking_no": "the carrier tracking number", "weight_grams": "the parcel weight in grams"}),
            "warehouses": ("distribution centres", {"region": "the sales region served", "capacity_pallets": "how many pallets fit"}),
            "carriers": ("delivery companies", {"sla_days": "the promised delivery time in days", "carrier_name": "the company name"}),
            "stock_levels": ("inventory per product and warehouse", {"on_hand": "units physically present", "reserved": "units promised to open orders"}),
        },
        [("shipments", "warehouse_id", "warehouses"), ("shipments", "carrier_id", "carriers"), ("stock_levels", "warehouse_id", "warehouses"), ("stock_levels", "product_id", "products")],
        [("Use COALESCE for missing quantities, treat them as zero", "What should a NULL quantity count as?"),
         ("Group by region before warehouse", "In which order should I aggregate locations?"),
         ("Avoid SELECT star, list the columns", "Can I select every column with an asterisk?")],
        [("available stock", "available stock is on_hand minus reserved", "How many units can still be sold?"),
         ("late shipment", "a late shipment arrived after the carrier's sla_days", "Which deliveries missed their promise?"),
         ("fill rate", "fill rate is orders shipped complete divided by all orders", "What fraction of orders went out in full?")],
        ["The user runs logistics analytics for a furniture retailer", "The main warehouse is in Rotterdam"],
    ),
    "gus": (
        {
            "employees": ("staff records", {"hired_on": "the first working day", "manager_id": "the employee's manager"}),
            "salaries": ("pay history", {"annual_eur": "the yearly gross salary in euros", "effective_from": "when the salary started"}),
            "absences": ("leave and sick days", {"absence_type": "vacation, sick or parental", "days": "working days absent"}),
            "departments": ("organisational units", {"cost_center": "the finance cost centre code", "head_count_budget": "planned number of staff"}),
        },
        [("salaries", "employee_id", "employees"), ("absences", "employee_id", "employees"), ("employees", "department_id", "departments"), ("departments", "parent_department_id", "departments")],
        [("Never return individual salaries, only aggregates of five or more people", "Can I list what each person earns?"),
         ("Use recursive CTEs for the org chart", "How do I walk the management hierarchy?"),
         ("Name output columns in snake_case", "How should result columns be named?")],
        [("attrition", "attrition is leavers in a year divided by average head count", "What is our staff turnover?"),
         ("sick rate", "the sick rate is sick absence days divided by working days", "How much time do people lose to illness?"),
         ("span of control", "span of control is the number of direct reports of a manager", "How many people report to each boss?")],
        ["The user is an HR analyst at an insurance company", "Salary data may only be queried from the secure schema hr_secure"],
    ),
    "hana": (
        {
            "listings": ("properties for sale or rent", {"asking_price": "the price the seller asks", "listed_on": "when the listing went live"}),
            "viewings": ("visits booked by prospective buyers", {"viewed_at": "the time of the visit", "feedback_score": "the buyer's rating from 1 to 5"}),
            "agents": ("estate agents", {"commission_pct": "the agent's commission percentage", "office": "the branch the agent works from"}),
            "offers": ("bids made on listings", {"offer_amount": "the amount offered", "accepted": "true when the seller accepted"}),
        },
        [("viewings", "listing_id", "listings"), ("offers", "listing_id", "listings"), ("listings", "agent_id", "agents"), ("offers", "buyer_id", "buyers")],
        [("Use median rather than mean for prices", "Which average suits property prices?"),
         ("Format prices with thousands separators", "How should large amounts be displayed?"),
         ("Exclude withdrawn listings unless asked", "Should delisted properties be counted?")],
        [("days on market", "days on market is the time from listed_on to the accepted offer", "How long do homes take to sell?"),
         ("conversion rate", "conversion rate is listings with an accepted offer divided by listings viewed", "What share of viewed homes get sold?"),
         ("price cut", "a price cut is a lower asking_price than the listing's first price", "Which sellers reduced what they ask?")],
        ["The user manages data for an estate agency in Dublin", "Listings come from the property portal API every hour"],
    ),
    "ivan": (
        {
            "titles": ("films and series in the catalogue", {"release_year": "the year of first release", "maturity_rating": "the age rating, e.g. PG-13"}),
            "plays": ("viewing sessions", {"watched_seconds": "how long the title was watched", "device_type": "tv, phone, tablet or web"}),
            "subscriptions": ("paying customer plans", {"plan_code": "BASIC, STANDARD or PREMIUM", "cancelled_at": "when the customer cancelled"}),
            "profiles": ("viewer profiles inside an account", {"is_kids": "true for a children's profile", "language": "the profile's UI language"}),
        },
        [("plays", "title_id", "titles"), ("plays", "profile_id", "profiles"), ("profiles", "subscription_id", "subscriptions"), ("titles", "series_id", "titles")],
        [("Always filter plays to the last 28 days unless told otherwise", "What time window should viewing queries use?"),
         ("Use approximate distinct counts for big tables", "How do I count unique viewers quickly?"),
         ("Return at most 20 titles in rankings", "How long should a top list be?")],
        [("completion rate", "completion rate is plays with watched_seconds above 90 percent of runtime divided by plays", "How often do people finish what they start?"),
         ("churn", "churn is subscriptions with cancelled_at in the month divided by active subscriptions", "What share of subscribers quit each month?"),
         ("binge session", "a binge session is three or more episodes of one series in a day", "When has someone watched many episodes in a row?")],
        ["The user is a content analyst at a streaming service", "The catalogue has about 8000 titles"],
    ),
    "jo": (
        {
            "sensors": ("IoT devices installed in buildings", {"firmware_version": "the installed firmware", "installed_on": "the installation date"}),
            "readings": ("measurements sent by sensors", {"temperature_c": "the temperature in Celsius", "recorded_at": "the measurement time"}),
            "buildings": ("sites being monitored", {"floor_area_m2": "the floor area in square metres", "city": "where the building is"}),
            "maintenance": ("service visits", {"performed_on": "the date of the visit", "technician": "who did the work"}),
        },
        [("readings", "sensor_id", "sensors"), ("sensors", "building_id", "buildings"), ("maintenance", "sensor_id", "sensors"), ("maintenance", "building_id", "buildings")],
        [("Use time_bucket of 15 minutes for charts", "What interval should graphs aggregate to?"),
         ("Drop readings with error_flag set", "Should faulty measurements be kept?"),
         ("Comment every non-obvious WHERE clause", "Do filters need explanations in the SQL?")],
        [("heating degree day", "a heating degree day is 15.5 minus the mean daily temperature_c when positive", "How do we measure how cold a day was for heating?"),
         ("offline sensor", "an offline sensor sent no readings for six hours", "Which devices have stopped reporting?"),
         ("energy intensity", "energy intensity is kWh per floor_area_m2 per year", "How much energy does a building use per square metre?")],
        ["The user works for a facilities management company in Oslo", "Readings arrive every minute from about 4000 sensors"],
    ),
}

NEGATIVES = [
    "What is the capital of Australia?", "Recommend a good pizza dough recipe",
    "Who won the football world cup in 2014?", "How do I fix a flat bicycle tyre?",
    "What is the boiling point of water on Everest?", "Translate good morning into Japanese",
    "Suggest a name for my new puppy", "How tall is the Eiffel Tower?",
    "What rhymes with orange?", "How do I grow tomatoes on a balcony?",
    "Tell me a joke about cats", "What is the plot of Hamlet?",
    "How many moons does Jupiter have?", "Best hiking trails in Patagonia",
    "How do I tie a bow tie?", "What are the rules of chess castling?",
    "Explain how a rainbow forms", "What should I pack for a beach holiday?",
    "How long should I boil an egg?", "Which planet is closest to the sun?",
]


def memories():
    """(user, key, memory_type, content) for every memory."""
    out = []
    for user, (tables, fks, rules, defs, facts) in DOMAINS.items():
        for t, (what, cols) in tables.items():
            out.append((user, f"{user}/table/{t}", "entity", f"Table {t} holds {what}"))
            for c, meaning in cols.items():
                out.append((user, f"{user}/column/{t}.{c}", "entity", f"Column {t}.{c} is {meaning}"))
        for t, c, target in fks:
            out.append((user, f"{user}/fk/{t}.{c}", "relationship", f"{t}.{c} references {target}.id"))
        for n, (rule, _) in enumerate(rules):
            out.append((user, f"{user}/rule/{n}", "rule", rule))
        for term, definition, _ in defs:
            out.append((user, f"{user}/def/{term}", "long_term", definition[0].upper() + definition[1:]))
        for n, fact in enumerate(facts):
            out.append((user, f"{user}/fact/{n}", "long_term", fact))
    return out


def mentions(content, identifier):
    """Whether content names identifier as a whole token (alone or after a dot)."""
    import re
    return re.search(r"(?<![\w])(?:\w+\.)?" + re.escape(identifier) + r"(?![\w])", content) is not None


def queries():
    """(user, kind, question, expected keys) for every question."""
    out = []
    mems = memories()
    for i, (user, (tables, fks, rules, defs, _)) in enumerate(DOMAINS.items()):
        # Identifier questions: one column per table by its bare name, every foreign key by its
        # dotted name, and one table by name.
        for t, (_, cols) in tables.items():
            c = list(cols)[0]
            out.append((user, "identifier", f"What is stored in {c}?", [f"{user}/column/{t}.{c}"]))
            # As people ask for SQL: the column by name amid other words. Every memory naming
            # the column counts.
            c = list(cols)[1]
            out.append((user, "identifier", f"Show the number of rows per {c} for last month",
                        [key for u, key, _, content in mems if u == user and mentions(content, c)]))
        for t, c, _ in fks:
            out.append((user, "identifier", f"What does {t}.{c} reference?", [f"{user}/fk/{t}.{c}"]))
        t = list(tables)[-1]
        out.append((user, "identifier", f"What is in the {t} table?", [f"{user}/table/{t}"]))
        for n, (_, question) in enumerate(rules):
            out.append((user, "paraphrase", question, [f"{user}/rule/{n}"]))
        for term, _, question in defs:
            out.append((user, "paraphrase", question, [f"{user}/def/{term}"]))
        for q in NEGATIVES[2 * i:2 * i + 2]:
            out.append((user, "negative", q, []))
    return out


if __name__ == "__main__":
    m, q = memories(), queries()
    kinds = {}
    for _, k, _, _ in q:
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{len(m)} memories over {len(DOMAINS)} users; {len(q)} questions: {kinds}")
