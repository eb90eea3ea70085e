//! What memori_extract asks a chat model and how it checks the answer, in plain Rust.
//!
//! The model sees the user's most relevant existing memories under short ids (m1, m2, ...) and
//! the new turn, and answers `{"memories": [{"action", "id", "type", "content", "importance",
//! "subject", "predicate", "object"}]}`. Every field is checked here before anything is written:
//! one bad decision refuses the whole answer.

use serde_json::{json, Value};

use crate::base::memory::MemoryType;

/// Most decisions one answer may hold.
pub const MAX_DECISIONS: usize = 50;

/// The system prompt memori ships (memori.extract_prompt overrides it).
pub const PROMPT: &str = "You maintain the long-term memory of an assistant for one user. You receive the user's existing memories, each with a short id, and one new conversation turn written by the user. Decide what the assistant should remember from the turn.

Answer with one JSON object and nothing else:
{\"memories\": [{\"action\": \"add\" | \"update\" | \"supersede\" | \"none\", \"id\": \"<short id of an existing memory>\" or null, \"type\": \"short_term\" | \"long_term\" | \"rule\" | \"entity\" | \"relationship\", \"content\": \"<one self-contained statement>\", \"importance\": <number from 0 to 1>, \"subject\": \"...\", \"predicate\": \"...\", \"object\": \"...\"}]}

Actions:
- add: something new worth remembering. id is null.
- update: the turn adds detail to an existing memory without contradicting it. id is that memory; content is its complete new text.
- supersede: the turn says an existing memory is no longer true (the user moved, changed a preference, a rule was replaced). id is the memory that stopped being true; content is what is true now. Supersede only a memory about the same subject; a new fact on another subject is an add, never a supersede.
- none: the turn confirms an existing memory (id) and changes nothing.
Return {\"memories\": []} when there is nothing to remember.

Types:
- rule: an instruction for how the assistant should behave or write (\"Always use table aliases\").
- long_term: a lasting fact or preference about the user or their work.
- short_term: something that matters only for the current task.
- entity: a named thing (a table, a column, a person, a product) and what it is.
- relationship: how two entities relate; also give subject, predicate and object.

Write each content as a short standalone sentence (\"The user prefers JOINs over subqueries.\"). Importance: 0.9 for rules and firm preferences, 0.5 for ordinary facts, lower for trivia. Ignore greetings and questions that carry no new information.";

/// The JSON schema of an answer (structured output, where the API offers it).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "memories": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "action": {"type": "string", "enum": ["add", "update", "supersede", "none"]},
                        "id": {"type": ["string", "null"]},
                        "type": {"type": "string", "enum": MemoryType::names()},
                        "content": {"type": "string"},
                        "importance": {"type": "number", "minimum": 0, "maximum": 1},
                        "subject": {"type": "string"},
                        "predicate": {"type": "string"},
                        "object": {"type": "string"}
                    },
                    "required": ["action", "type", "content"]
                }
            }
        },
        "required": ["memories"]
    })
}

/// An existing memory the model is shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    /// What the model calls it: m1, m2, ...
    pub short: String,
    pub memory_id: String,
    pub memory_type: String,
    pub content: String,
}

/// The user message of an extraction call: the memories shown and the turn, as JSON (the
/// turn is data, never instructions mixed into the prompt).
pub fn user_message(known: &[Known], turn: &str) -> String {
    let shown: Vec<Value> = known
        .iter()
        .map(|k| json!({"id": k.short, "type": k.memory_type, "content": k.content}))
        .collect();
    json!({"existing_memories": shown, "turn": turn}).to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Update,
    Supersede,
    None,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Update => "update",
            Action::Supersede => "supersede",
            Action::None => "none",
        }
    }
}

/// One checked decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The existing memory it is about (index into the known list).
    pub target: Option<usize>,
    /// The type to write (for update and none: the memory's own when the model gave none; empty
    /// for a none about no memory and without a type).
    pub memory_type: String,
    /// The content to write (for none: the memory's own, or what the model said).
    pub content: String,
    pub importance: Option<f64>,
    /// (subject, predicate, object) of a relationship.
    pub triple: Option<[String; 3]>,
}

/// The JSON inside an answer: the whole text, or one fenced block (```json ... ```), which
/// chat models often add even when asked not to.
fn json_text(answer: &str) -> &str {
    let t = answer.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        if let Some(inner) = rest.trim_end().strip_suffix("```") {
            return inner.trim();
        }
    }
    t
}

fn text_field(item: &Value, name: &str, n: usize) -> Result<Option<String>, String> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(format!(
            "decision {n}: \"{name}\" must be a string, not {other}"
        )),
    }
}

/// Checks an answer against the memories the model was shown. `lookup` resolves an id that is
/// not a short id (a model may quote a full memory_id): Some only for a current memory of
/// this user, which is then added to `known`.
pub fn parse(
    answer: &str,
    known: &mut Vec<Known>,
    mut lookup: impl FnMut(&str) -> Option<Known>,
) -> Result<Vec<Decision>, String> {
    let v: Value = serde_json::from_str(json_text(answer))
        .map_err(|e| format!("the answer is not JSON ({e})"))?;
    let items = match &v {
        Value::Object(o) => match o.get("memories") {
            Some(Value::Array(a)) => a,
            Some(_) => return Err("\"memories\" must be an array".into()),
            None => return Err("the answer has no \"memories\" array".into()),
        },
        Value::Array(a) => a,
        _ => return Err("the answer must be an object with a \"memories\" array".into()),
    };
    if items.len() > MAX_DECISIONS {
        return Err(format!(
            "{} decisions; at most {MAX_DECISIONS} are taken from one turn",
            items.len()
        ));
    }
    let mut out = Vec::new();
    let mut claimed: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        if !item.is_object() {
            return Err(format!("decision {n} is not an object"));
        }
        let action = match text_field(item, "action", n)?
            .map(|a| a.to_ascii_lowercase())
            .as_deref()
        {
            Some("add") => Action::Add,
            Some("update") => Action::Update,
            Some("supersede") => Action::Supersede,
            Some("none") => Action::None,
            Some(other) => {
                return Err(format!(
                    "decision {n}: unknown action \"{other}\" (add, update, supersede or none)"
                ))
            }
            None => return Err(format!("decision {n} has no action")),
        };
        let id = match item.get("id") {
            Some(Value::Number(x)) => Some(format!("m{x}")),
            _ => text_field(item, "id", n)?,
        };
        let target = match (&id, action) {
            (Some(id), Action::Add) => {
                return Err(format!("decision {n}: an add takes no id (got \"{id}\")"))
            }
            (None, Action::Update | Action::Supersede) => {
                return Err(format!(
                    "decision {n}: {} needs the id of an existing memory",
                    action.name()
                ))
            }
            (None, _) => None,
            (Some(id), _) => {
                let found = known.iter().position(|k| {
                    k.short.eq_ignore_ascii_case(id) || k.memory_id.eq_ignore_ascii_case(id)
                });
                match found.or_else(|| {
                    lookup(id).map(|k| {
                        known.push(k);
                        known.len() - 1
                    })
                }) {
                    Some(t) => Some(t),
                    None => {
                        return Err(format!(
                            "decision {n}: \"{id}\" is not one of this user's current memories"
                        ))
                    }
                }
            }
        };
        if let (Some(t), Action::Update | Action::Supersede) = (target, action) {
            if claimed.contains(&t) {
                return Err(format!(
                    "decision {n}: memory {} is updated or superseded twice",
                    known[t].short
                ));
            }
            claimed.push(t);
        }
        let memory_type = match text_field(item, "type", n)? {
            Some(t) if MemoryType::parse(&t).is_ok() => t,
            Some(t) => {
                return Err(format!(
                "decision {n}: unknown type \"{t}\" (short_term, long_term, rule, entity or relationship)"
            ))
            }
            None => match target {
                Some(t) if matches!(action, Action::Update | Action::None) => {
                    known[t].memory_type.clone()
                }
                // "Nothing to remember" said as a decision: nothing to type.
                None if action == Action::None => String::new(),
                _ => return Err(format!("decision {n} has no type")),
            },
        };
        let importance = match item.get("importance") {
            None | Some(Value::Null) => None,
            Some(Value::Number(x)) => match x.as_f64() {
                Some(f) if (0.0..=1.0).contains(&f) => Some(f),
                _ => {
                    return Err(format!(
                        "decision {n}: importance {x} is not between 0 and 1"
                    ))
                }
            },
            Some(other) => {
                return Err(format!(
                    "decision {n}: importance must be a number, not {other}"
                ))
            }
        };
        let parts = [
            text_field(item, "subject", n)?,
            text_field(item, "predicate", n)?,
            text_field(item, "object", n)?,
        ];
        let writes = action != Action::None;
        let triple = if memory_type == MemoryType::Relationship.as_str() && writes {
            match parts {
                [Some(s), Some(p), Some(o)] => Some([s, p, o]),
                _ => {
                    return Err(format!(
                        "decision {n}: a relationship needs subject, predicate and object"
                    ))
                }
            }
        } else {
            None
        };
        let content = match (text_field(item, "content", n)?, &triple, target) {
            (Some(c), _, _) => c,
            (None, Some([s, p, o]), _) => format!("{s} {p} {o}"),
            (None, None, Some(t)) if !writes => known[t].content.clone(),
            (None, _, _) if !writes => String::new(),
            (None, _, _) => return Err(format!("decision {n} has no content")),
        };
        out.push(Decision {
            action,
            target,
            memory_type,
            content,
            importance,
            triple,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<Known> {
        vec![
            Known {
                short: "m1".into(),
                memory_id: "00000000-0000-0000-0000-000000000001".into(),
                memory_type: "long_term".into(),
                content: "The user lives in Paris.".into(),
            },
            Known {
                short: "m2".into(),
                memory_id: "00000000-0000-0000-0000-000000000002".into(),
                memory_type: "rule".into(),
                content: "Use table aliases.".into(),
            },
        ]
    }

    fn nothing(_: &str) -> Option<Known> {
        None
    }

    #[test]
    fn every_action_parses() {
        let mut k = known();
        let d = parse(
            r#"```json
            {"memories": [
              {"action": "add", "id": null, "type": "rule", "content": "Always alias tables.", "importance": 0.9},
              {"action": "update", "id": "M2", "content": "Use short table aliases."},
              {"action": "supersede", "id": "m1", "type": "long_term", "content": "The user lives in Berlin."},
              {"action": "none", "id": "00000000-0000-0000-0000-000000000002"},
              {"action": "add", "type": "relationship", "subject": "orders", "predicate": "references", "object": "customers"}
            ]}
            ```"#,
            &mut k,
            nothing,
        )
        .unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(
            (d[0].action, d[0].target, d[0].importance),
            (Action::Add, None, Some(0.9))
        );
        assert_eq!((d[1].action, d[1].target), (Action::Update, Some(1)));
        assert_eq!(d[1].memory_type, "rule", "an update keeps the type");
        assert_eq!((d[2].action, d[2].target), (Action::Supersede, Some(0)));
        assert_eq!((d[3].action, d[3].target), (Action::None, Some(1)));
        assert_eq!(d[3].content, "Use table aliases.");
        assert_eq!(d[4].content, "orders references customers");
        assert_eq!(
            d[4].triple,
            Some(["orders".into(), "references".into(), "customers".into()])
        );
        assert!(parse(r#"{"memories": []}"#, &mut k, nothing)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_id_outside_the_list_is_looked_up_once() {
        let mut k = known();
        let other = "00000000-0000-0000-0000-0000000000ff";
        let d = parse(
            &format!(
                r#"{{"memories": [{{"action": "update", "id": "{other}", "content": "x"}}]}}"#
            ),
            &mut k,
            |id| {
                (id == other).then(|| Known {
                    short: id.into(),
                    memory_id: id.into(),
                    memory_type: "entity".into(),
                    content: "old".into(),
                })
            },
        )
        .unwrap();
        assert_eq!(d[0].target, Some(2));
        assert_eq!(d[0].memory_type, "entity");
    }

    #[test]
    fn every_fault_is_refused_with_its_reason() {
        for (answer, why) in [
            ("I think the user lives in Berlin.", "not JSON"),
            (r#"{"facts": []}"#, "no \"memories\""),
            (r#"{"memories": {}}"#, "must be an array"),
            (r#"{"memories": [1]}"#, "not an object"),
            (
                r#"{"memories": [{"type": "rule", "content": "x"}]}"#,
                "no action",
            ),
            (
                r#"{"memories": [{"action": "delete", "type": "rule", "content": "x"}]}"#,
                "unknown action",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "fact", "content": "x"}]}"#,
                "unknown type",
            ),
            (
                r#"{"memories": [{"action": "add", "content": "x"}]}"#,
                "no type",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "rule"}]}"#,
                "no content",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "rule", "content": "x", "importance": 1.5}]}"#,
                "not between 0 and 1",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "rule", "content": "x", "importance": "high"}]}"#,
                "must be a number",
            ),
            (
                r#"{"memories": [{"action": "add", "id": "m1", "type": "rule", "content": "x"}]}"#,
                "takes no id",
            ),
            (
                r#"{"memories": [{"action": "update", "type": "rule", "content": "x"}]}"#,
                "needs the id",
            ),
            (
                r#"{"memories": [{"action": "supersede", "id": "m9", "type": "rule", "content": "x"}]}"#,
                "not one of this user's",
            ),
            (
                r#"{"memories": [{"action": "update", "id": "m1", "content": "x"}, {"action": "supersede", "id": "m1", "type": "long_term", "content": "y"}]}"#,
                "twice",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "relationship", "subject": "a", "content": "x"}]}"#,
                "subject, predicate and object",
            ),
            (
                r#"{"memories": [{"action": "add", "type": "rule", "content": 7}]}"#,
                "must be a string",
            ),
        ] {
            let e = parse(answer, &mut known(), nothing).unwrap_err();
            assert!(e.contains(why), "{answer}: {e}");
        }
        let many = format!(
            r#"{{"memories": [{}]}}"#,
            vec![r#"{"action": "add", "type": "rule", "content": "x"}"#; MAX_DECISIONS + 1]
                .join(",")
        );
        assert!(parse(&many, &mut known(), nothing)
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn the_user_message_is_json_with_short_ids() {
        let m = user_message(&known(), "I moved to \"Berlin\".");
        let v: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["existing_memories"][0]["id"], "m1");
        assert_eq!(v["turn"], "I moved to \"Berlin\".");
        assert!(v["existing_memories"][0].get("memory_id").is_none());
    }
}
