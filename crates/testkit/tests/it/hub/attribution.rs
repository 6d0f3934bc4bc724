//! Attribution end to end: a Stack's injections and other Stacks' skills shape a request (the mock
//! upstream records what the model saw), the contract and the fingerprint list them, and filing pays
//! each skill creator its royalty, the node's referrer, the model and the data provider their
//! shares; referral codes bring nodes and Stacks; API key roles guard what changes a Stack.

use serde_json::{json, Value};
use stacknet_ledger::AccountId;
use stacknet_node::settlement::{file_wallet, HubClient};
use stacknet_protocol::{SkillId, StackId};
use stacknet_testkit::mock_upstream::{Script, MOCK_MODEL};
use stacknet_testkit::network::TestNetwork;

use super::money::{admin, books_balance, on_both_stores, posted, priced, topup, Db, PRICE};
use super::{chat_body, client, paperwork_of, post_chat};

on_both_stores!(
    a_request_with_two_injections_and_two_skills_is_shaped_listed_and_paid_to_every_party,
    a_referral_chain_credits_the_nodes_referrer_and_shares_top_ups_once
);

/// `method` on `path` of the hub with `key` as bearer (none: no Authorization header).
async fn call(
    net: &TestNetwork,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, format!("{}{path}", net.hub.url()));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(net: &TestNetwork, path: &str, key: &str, body: Value) -> Value {
    let (status, v) = call(net, reqwest::Method::POST, path, Some(key), Some(body)).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

fn tool(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
}

async fn publish(net: &TestNetwork, key: &str, name: &str, royalty: u32, public: bool) -> SkillId {
    let v = post(
        net,
        "/stacknet/v1/skills",
        key,
        json!({"name": name, "description": format!("the {name} skill"),
               "instructions": format!("Follow the {name} method."), "tools": [tool(name)],
               "royalty_bps": royalty, "public": public}),
    )
    .await;
    v["id"].as_str().unwrap().parse().unwrap()
}

/// A `client` key of `stack` (only makes requests).
async fn client_key(net: &TestNetwork, stack: StackId) -> (String, String) {
    let resp = admin(net, &format!("/stacks/{stack}/keys"), json!({})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["role"], "client");
    (
        v["api_key"].as_str().unwrap().to_owned(),
        v["prefix"].as_str().unwrap().to_owned(),
    )
}

async fn a_request_with_two_injections_and_two_skills_is_shaped_listed_and_paid_to_every_party(db: Db) {
    let net = priced(&db, Script::text("shaped answer"), |c| c.challenge_window_ms = 0).await;
    topup(&net, 10_000_000).await;
    let (creator_a, key_a) = net.new_stack("skills A").await;
    let (creator_b, key_b) = net.new_stack("skills B").await;
    let (referrer, key_r) = net.new_stack("referrer").await;
    let (model_provider, _) = net.new_stack("model maker").await;
    let (data_provider, _) = net.new_stack("data maker").await;

    let skill_a = publish(&net, &key_a, "pirate", 300, true).await;
    let skill_b = publish(&net, &key_b, "brief", 150, true).await;
    let inj_1 = post(
        &net,
        "/stacknet/v1/injections",
        &net.api_key,
        json!({"name": "voice", "system": "You are Acme's assistant."}),
    )
    .await;
    let inj_2 = post(
        &net,
        "/stacknet/v1/injections",
        &net.api_key,
        json!({"name": "orders", "tools": [tool("lookup_order")]}),
    )
    .await;
    assert_eq!(
        (inj_1["version"].as_u64(), inj_2["active"].as_bool()),
        (Some(1), Some(true))
    );

    // The node registers with the referrer's code; the model's catalog names its providers.
    let code = post(&net, "/stacknet/v1/referrals", &key_r, json!({})).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let node = &net.nodes[0];
    let referral = hub.refer(&node.key, &code).await.unwrap();
    assert_eq!(referral.referrer, referrer);
    let resp = admin(
        &net,
        "/prices",
        json!({"model": MOCK_MODEL, "input_per_mtok": PRICE.0.to_string(), "output_per_mtok": PRICE.1.to_string(),
               "per_request": PRICE.2.to_string(), "model_provider": model_provider, "data_provider": data_provider}),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let mut body = chat_body(false);
    body["skills"] = json!([skill_b, skill_a]);
    body["tools"] = json!([tool("client_tool")]);
    let resp = post_chat(&net, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();

    // What the model saw: the injection's system prompt, then the skills' instructions (in id
    // order), then the client's own message; every tool; no `skills` field.
    let mut skills = vec![skill_a, skill_b];
    skills.sort();
    let mut injections: Vec<String> = [&inj_1, &inj_2]
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    injections.sort();
    let seen = net.upstream.last_request().unwrap();
    assert!(seen.get("skills").is_none(), "{seen}");
    let messages = seen["messages"].as_array().unwrap();
    let name_of = |s: SkillId| if s == skill_a { "pirate" } else { "brief" };
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are Acme's assistant."})
    );
    assert_eq!(
        messages[1]["content"],
        format!("Follow the {} method.", name_of(skills[0]))
    );
    assert_eq!(
        messages[2]["content"],
        format!("Follow the {} method.", name_of(skills[1]))
    );
    assert_eq!(messages[3], json!({"role": "user", "content": "hello there"}));
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "client_tool",
            "lookup_order",
            name_of(skills[0]),
            name_of(skills[1])
        ]
    );

    // The answer's fingerprint and the contract list them; the contract carries the royalties and parties.
    let attribution = &answer["attribution"];
    assert_eq!(attribution["skills"], json!(skills));
    assert_eq!(attribution["injections"], json!(injections));
    let pw = paperwork_of(&net, &answer).await;
    let contract = &pw.body.contract.body;
    assert_eq!(contract.skills, skills);
    let royalty = |s: SkillId| if s == skill_a { 300 } else { 150 };
    assert_eq!(
        contract.skill_royalties_bps,
        skills.iter().map(|s| royalty(*s)).collect::<Vec<_>>()
    );
    assert_eq!(
        contract
            .injections
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        injections
    );
    assert_eq!(contract.parties.node_referrer, Some(referrer));
    assert_eq!(contract.parties.model_provider, Some(model_provider));
    assert_eq!(contract.parties.data_provider, Some(data_provider));

    // Filing pays each party exactly its share of the cost.
    net.hub.hub.state.writer.flush().await;
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].status(), "settled", "{verdicts:?}");
    let cost = verdicts[0].amount().unwrap().micros();
    let part = |bps: i64| cost * bps / 10_000;
    assert_eq!(posted(&net, AccountId::creator(skill_a)).await, part(300));
    assert_eq!(posted(&net, AccountId::creator(skill_b)).await, part(150));
    assert_eq!(posted(&net, AccountId::stack(referrer)).await, part(500));
    assert_eq!(posted(&net, AccountId::stack(model_provider)).await, part(400));
    assert_eq!(posted(&net, AccountId::stack(data_provider)).await, part(100));
    books_balance(&net).await;

    // The public registry shows each skill's usage and earnings; its creator sees the statement.
    let (status, list) = call(&net, reqwest::Method::GET, "/stacknet/v1/skills", None, None).await;
    assert_eq!(status, 200);
    let listed = |id: SkillId| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == json!(id))
            .cloned()
            .unwrap()
    };
    assert_eq!(listed(skill_a)["usage"], 1);
    assert_eq!(listed(skill_a)["earnings"], part(300).to_string());
    assert_eq!(listed(skill_b)["creator"], json!(creator_b));
    assert!(
        listed(skill_a).get("instructions").is_none(),
        "only its creator sees its instructions"
    );
    let (status, s) = call(
        &net,
        reqwest::Method::GET,
        &format!("/stacknet/v1/statement?skill={skill_a}"),
        Some(&key_a),
        None,
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["balance"]["posted"], part(300).to_string());
    assert_eq!(s["skill"], json!(skill_a));
    // Another Stack cannot read it.
    let (status, _) = call(
        &net,
        reqwest::Method::GET,
        &format!("/stacknet/v1/statement?skill={skill_a}"),
        Some(&key_b),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The creator collects its royalties into its Stack's balance; earnings still count them.
    let collect = format!("/stacknet/v1/skills/{skill_a}/collect");
    let (status, _) = call(&net, reqwest::Method::POST, &collect, Some(&key_b), None).await;
    assert_eq!(status, 403, "another Stack's skill");
    let (status, done) = call(&net, reqwest::Method::POST, &collect, Some(&key_a), None).await;
    assert_eq!(
        (status, done["amount"].as_str()),
        (200, Some(part(300).to_string().as_str())),
        "{done}"
    );
    assert_eq!(done["transfer"], format!("royalty:{skill_a}:1"));
    assert_eq!(posted(&net, AccountId::creator(skill_a)).await, 0);
    assert_eq!(posted(&net, AccountId::stack(creator_a)).await, part(300));
    let (status, _) = call(&net, reqwest::Method::POST, &collect, Some(&key_a), None).await;
    assert_eq!(status, 400, "nothing left to collect");
    let (_, shown) = call(
        &net,
        reqwest::Method::GET,
        &format!("/stacknet/v1/skills/{skill_a}"),
        None,
        None,
    )
    .await;
    assert_eq!(shown["earnings"], part(300).to_string());
    books_balance(&net).await;
}

async fn a_referral_chain_credits_the_nodes_referrer_and_shares_top_ups_once(db: Db) {
    let net = priced(&db, Script::text("referred"), |c| c.challenge_window_ms = 0).await;
    let (referrer, key_r) = net.new_stack("referrer").await;
    let code = post(&net, "/stacknet/v1/referrals", &key_r, json!({})).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(code.starts_with("ref_") && code.len() == 36, "{code}");

    // An unknown code creates nothing.
    let before = net.hub.hub.state.store.stacks().await.unwrap().len();
    let resp = admin(
        &net,
        "/stacks",
        json!({"name": "lost", "referral_code": "ref_nope"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "referral_code");
    assert_eq!(net.hub.hub.state.store.stacks().await.unwrap().len(), before);

    // A user brought by the referrer: a new Stack signs up with the code.
    let resp = admin(&net, "/stacks", json!({"name": "brought", "referral_code": code})).await;
    assert_eq!(resp.status(), 200);
    let brought: Value = resp.json().await.unwrap();
    assert_eq!(brought["referred_by"], json!(referrer));
    let brought: StackId = brought["id"].as_str().unwrap().parse().unwrap();

    // Its top-up pays the referrer 5% from the treasury; a short treasury owes it, and the same
    // top-up sent again pays it then, once.
    let topup_brought = |id: &'static str| {
        let (net, path) = (&net, format!("/stacks/{brought}/topup"));
        async move { admin(net, &path, json!({"amount": "1000000", "id": id})).await }
    };
    let first: Value = topup_brought("order-1").await.json().await.unwrap();
    assert_eq!(first["referral"]["amount"], "50000");
    assert_eq!(first["referral"]["paid"], false, "{first}");
    assert_eq!(posted(&net, AccountId::stack(referrer)).await, 0);
    let resp = admin(&net, "/treasury/topup", json!({"amount": "1000000"})).await;
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        let again: Value = topup_brought("order-1").await.json().await.unwrap();
        assert_eq!(
            (again["replayed"].as_bool(), again["referral"]["paid"].as_bool()),
            (Some(true), Some(true)),
            "{again}"
        );
    }
    assert_eq!(posted(&net, AccountId::stack(referrer)).await, 50_000);
    assert_eq!(
        posted(&net, AccountId::stack(brought)).await,
        1_000_000,
        "the referred Stack gets its whole top-up"
    );
    // The network's own Stack was referred by nobody: no share.
    let own: Value = admin(
        &net,
        &format!("/stacks/{}/topup", net.stack),
        json!({"amount": "1000000"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(own.get("referral").is_none(), "{own}");

    // The node registers with the code: once; another code is refused, the same one is harmless.
    let hub = HubClient::connect(&net.hub.url()).await.unwrap();
    let node = &net.nodes[0];
    assert_eq!(hub.refer(&node.key, &code).await.unwrap().referrer, referrer);
    assert_eq!(hub.refer(&node.key, &code).await.unwrap().referrer, referrer);
    let (_, key_other) = net.new_stack("other").await;
    let other = post(&net, "/stacknet/v1/referrals", &key_other, json!({})).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = hub.refer(&node.key, &other).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("never changes"), "{err}");
    let err = hub.refer(&node.key, "ref_unknown").await.unwrap_err().to_string();
    assert!(err.contains("400"), "{err}");

    // The referrer's statement and its codes show all of it.
    let (_, list) = call(
        &net,
        reqwest::Method::GET,
        "/stacknet/v1/referrals",
        Some(&key_r),
        None,
    )
    .await;
    assert_eq!(list["topup_share_bps"], 500);
    assert_eq!(list["data"][0]["nodes"], json!([node.node.node_key_id()]));
    assert_eq!(list["data"][0]["stacks"], json!([brought]));
    let (_, s) = call(
        &net,
        reqwest::Method::GET,
        "/stacknet/v1/statement",
        Some(&key_r),
        None,
    )
    .await;
    let reasons: Vec<&str> = s["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["referral"], "{s}");

    // A task on the node pays the referrer its node_referrer share at filing.
    topup(&net, 1_000_000).await;
    assert_eq!(post_chat(&net, &chat_body(false)).await.status(), 200);
    net.hub.hub.state.writer.flush().await;
    let verdicts = file_wallet(&hub, &node.key, node.node.wallet()).await.unwrap();
    let cost = verdicts[0].amount().unwrap().micros();
    assert_eq!(
        posted(&net, AccountId::stack(referrer)).await,
        50_000 + cost * 500 / 10_000
    );
    books_balance(&net).await;
}

#[tokio::test]
async fn skills_that_are_missing_private_unpublished_or_misused_are_refused_with_400() {
    let net = TestNetwork::start(Script::echo()).await;
    let (_, key_other) = net.new_stack("other").await;
    let private = publish(&net, &key_other, "secret", 0, false).await;
    let public = publish(&net, &key_other, "open", 0, true).await;
    let chat = |skills: Value| {
        let mut b = chat_body(false);
        b["skills"] = skills;
        b
    };
    let refused = |body: Value, param: &'static str, words: &'static str| {
        let net = &net;
        async move {
            let resp = post_chat(net, &body).await;
            assert_eq!(resp.status(), 400, "{body}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["error"]["param"], param, "{err}");
            let msg = err["error"]["message"].as_str().unwrap();
            assert!(msg.contains(words), "{msg}");
        }
    };
    refused(chat(json!([SkillId::random()])), "skills", "does not exist").await;
    refused(chat(json!([private])), "skills", "not public").await;
    refused(chat(json!("skill_x")), "skills", "array").await;
    refused(chat(json!(["nope"])), "skills[0]", "skill id").await;
    refused(chat(json!(vec![public; 9])), "skills", "at most 8").await;
    // A skill without a model cannot stand in for one.
    let mut alias = chat_body(false);
    alias["model"] = json!(public);
    refused(alias, "model", "names no model").await;
    // Skills are for chat: embeddings with one is a 400.
    let resp = client()
        .post(format!("{}/embeddings", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&json!({"model": MOCK_MODEL, "input": "x", "skills": [public]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Unpublished: refused from then on; its creator's own private skill is usable by it alone.
    let (status, _) = call(
        &net,
        reqwest::Method::DELETE,
        &format!("/stacknet/v1/skills/{public}"),
        Some(&key_other),
        None,
    )
    .await;
    assert_eq!(status, 200);
    refused(chat(json!([public])), "skills", "unpublished").await;
    let resp = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&key_other)
        .json(&chat(json!([private])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a Stack may use its own private skill");

    // A skill with a model can be named as the model: the node is asked for the skill's model.
    let with_model = post(
        &net,
        "/stacknet/v1/skills",
        &key_other,
        json!({"name": "aliased", "model": MOCK_MODEL, "instructions": "Say hi."}),
    )
    .await;
    let mut alias = chat_body(false);
    alias["model"] = with_model["id"].clone();
    let resp = post_chat(&net, &alias).await;
    assert_eq!(resp.status(), 200);
    let seen = net.upstream.last_request().unwrap();
    assert_eq!(seen["model"], MOCK_MODEL);
    assert_eq!(seen["messages"][0]["content"], "Say hi.");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["attribution"]["skills"], json!([with_model["id"]]));

    // A tool named like one of the request's own is a 400 naming the skill.
    let tools = post(
        &net,
        "/stacknet/v1/skills",
        &key_other,
        json!({"name": "tools", "tools": [tool("clash")]}),
    )
    .await;
    let mut body = chat(json!([tools["id"]]));
    body["tools"] = json!([tool("clash")]);
    refused(body, "tools", "skill").await;
}

#[tokio::test]
async fn only_owner_keys_manage_a_stack_and_only_its_creator_changes_a_skill() {
    let net = TestNetwork::start(Script::echo()).await;
    let (client_only, _) = client_key(&net, net.stack).await;
    for (method, path) in [
        (reqwest::Method::POST, "/stacknet/v1/skills"),
        (reqwest::Method::POST, "/stacknet/v1/injections"),
        (reqwest::Method::GET, "/stacknet/v1/injections"),
        (reqwest::Method::POST, "/stacknet/v1/referrals"),
    ] {
        let (status, err) = call(
            &net,
            method,
            path,
            Some(&client_only),
            Some(json!({"name": "x", "system": "y"})),
        )
        .await;
        assert_eq!(status, 403, "{path}: {err}");
        assert_eq!(err["error"]["code"], "insufficient_permissions");
    }
    // A client key still makes requests.
    let resp = client()
        .post(format!("{}/chat/completions", net.base_url()))
        .bearer_auth(&client_only)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let skill = publish(&net, &net.api_key, "mine", 100, true).await;
    let (_, key_other) = net.new_stack("other").await;
    let path = format!("/stacknet/v1/skills/{skill}");
    let (status, _) = call(
        &net,
        reqwest::Method::PUT,
        &path,
        Some(&key_other),
        Some(json!({"name": "stolen"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&net, reqwest::Method::DELETE, &path, Some(&key_other), None).await;
    assert_eq!(status, 403);
    // Its creator updates it: version 2.
    let (status, v) = call(
        &net,
        reqwest::Method::PUT,
        &path,
        Some(&net.api_key),
        Some(json!({"name": "mine", "instructions": "v2", "royalty_bps": 200})),
    )
    .await;
    assert_eq!((status, v["version"].as_u64()), (200, Some(2)), "{v}");
    // A royalty above the network's skills share (500) is refused.
    let (status, err) = call(
        &net,
        reqwest::Method::POST,
        "/stacknet/v1/skills",
        Some(&net.api_key),
        Some(json!({"name": "greedy", "instructions": "x", "royalty_bps": 501})),
    )
    .await;
    assert_eq!(
        (status, err["error"]["param"].as_str()),
        (400, Some("royalty_bps"))
    );
    // Malformed documents: no content, a tool without a name, an unknown field.
    for body in [
        json!({"name": "empty"}),
        json!({"name": "t", "tools": [{"type": "function", "function": {}}]}),
        json!({"name": "t", "system": "s", "bogus": 1}),
    ] {
        let (status, err) = call(
            &net,
            reqwest::Method::POST,
            "/stacknet/v1/injections",
            Some(&net.api_key),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {err}");
    }
}

#[tokio::test]
async fn injections_apply_to_the_keys_they_name_and_keep_every_version() {
    let mut net = TestNetwork::start(Script::echo()).await;
    let (other_key, other_prefix) = client_key(&net, net.stack).await;
    let inj = post(
        &net,
        "/stacknet/v1/injections",
        &net.api_key,
        json!({"name": "scoped", "system": "Only for one key.", "keys": [other_prefix]}),
    )
    .await;
    let id = inj["id"].as_str().unwrap().to_owned();
    let send = |key: String| {
        let net = &net;
        async move {
            let resp = client()
                .post(format!("{}/chat/completions", net.base_url()))
                .bearer_auth(key)
                .json(&chat_body(false))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let answer: Value = resp.json().await.unwrap();
            (net.upstream.last_request().unwrap(), answer)
        }
    };
    let (seen, answer) = send(net.api_key.clone()).await;
    assert_eq!(
        seen["messages"].as_array().unwrap().len(),
        1,
        "not for the owner key: {seen}"
    );
    assert_eq!(answer["attribution"]["injections"], json!([]));
    let (seen, answer) = send(other_key.clone()).await;
    assert_eq!(seen["messages"][0]["content"], "Only for one key.");
    assert_eq!(answer["attribution"]["injections"], json!([id]));

    // A new version applies from now on; the old one stays readable, as proof.
    let path = format!("/stacknet/v1/injections/{id}");
    let (status, v2) = call(
        &net,
        reqwest::Method::PUT,
        &path,
        Some(&net.api_key),
        Some(json!({"name": "scoped", "system": "Version two."})),
    )
    .await;
    assert_eq!((status, v2["version"].as_u64()), (200, Some(2)));
    let (seen, _) = send(net.api_key.clone()).await;
    assert_eq!(seen["messages"][0]["content"], "Version two.");
    let (status, v1) = call(
        &net,
        reqwest::Method::GET,
        &format!("{path}?version=1"),
        Some(&net.api_key),
        None,
    )
    .await;
    assert_eq!((status, v1["system"].as_str()), (200, Some("Only for one key.")));
    // Another Stack does not see it.
    let (_, key_other_stack) = net.new_stack("other").await;
    let (status, _) = call(&net, reqwest::Method::GET, &path, Some(&key_other_stack), None).await;
    assert_eq!(status, 404);
    // Deleted: a last version that applies to nothing.
    let (status, v3) = call(&net, reqwest::Method::DELETE, &path, Some(&net.api_key), None).await;
    assert_eq!(
        (status, v3["version"].as_u64(), v3["active"].as_bool()),
        (200, Some(3), Some(false))
    );
    let (seen, answer) = send(other_key).await;
    assert_eq!(seen["messages"].as_array().unwrap().len(), 1);
    assert_eq!(answer["attribution"]["injections"], json!([]));
    // The store has all three versions, and a restarted hub serves the latest.
    let versions = net
        .hub
        .hub
        .state
        .store
        .doc_versions("injection".into(), id.clone())
        .await
        .unwrap();
    assert_eq!(versions.len(), 3);
    net.restart_hub().await;
    let (status, list) = call(
        &net,
        reqwest::Method::GET,
        "/stacknet/v1/injections",
        Some(&net.api_key),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            list["data"][0]["version"].as_u64(),
            list["data"][0]["active"].as_bool()
        ),
        (Some(3), Some(false))
    );
}
