use super::*;

fn addr(a: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
}

fn node() -> Supernode {
    Supernode::new(Config {
        me: addr(1, 1214),
        ..Config::default()
    })
}

fn login(s: &mut Supernode, id: SessionId, name: &str, t: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    s.connect(id, addr(id as u8 + 10, 40000), t, &mut out);
    s.receive(
        id,
        Request::NodeInfo(NodeInfo {
            ip: *addr(id as u8 + 10, 0).ip(),
            port: 2000 + id as u16,
            bandwidth: 0x60,
            name: Bytes::copy_from_slice(name.as_bytes()),
        }),
        t,
        &mut out,
    );
    out
}

fn share(name: &str, n: u8) -> Share {
    let mut hash = [n; 20];
    hash[0] = name.len() as u8;
    Share {
        media: 1,
        hash,
        file_id: 7,
        size: 1000 + u64::from(n),
        tags: vec![Tag {
            id: TAG_FILENAME,
            value: Bytes::copy_from_slice(name.as_bytes()),
        }],
    }
}

fn query(id: u16, text: &str) -> Request {
    Request::Query(Query {
        id,
        max_results: 1000,
        realm: 0xBF,
        terms: vec![Term {
            cmp: 0x05,
            tag: 0,
            value: Bytes::copy_from_slice(text.as_bytes()),
        }],
    })
}

fn hits_of(out: &[Action], to: SessionId) -> Vec<Hit> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send(s, Reply::Results { hits, .. }) if *s == to => Some(hits.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn login_sends_external_ip_and_stats_gift_accepts() {
    let mut s = node();
    let t = Instant::now();
    let mut out = Vec::new();
    s.connect(5, addr(9, 4000), t, &mut out);
    assert!(out.contains(&Action::Send(5, Reply::ExternalIp(*addr(9, 0).ip()))));
    let users = out.iter().find_map(|a| match a {
        Action::Send(_, Reply::Stats { users, .. }) => Some(*users),
        _ => None,
    });
    assert!(users.expect("stats sent") >= MIN_ADVERTISED_USERS);
    assert!(out.contains(&Action::Send(
        5,
        Reply::NetworkName(Bytes::from_static(NETWORK_NAME))
    )));
}

#[test]
fn a_search_finds_another_users_file_then_ends() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut out = Vec::new();
    s.receive(
        1,
        Request::Share(share("Needle Test File.bin", 1)),
        t,
        &mut out,
    );
    s.receive(1, Request::Share(share("other.mp3", 2)), t, &mut out);
    s.receive(2, query(0, "needle file"), t, &mut out);
    let hits = hits_of(&out, 2);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].user, Bytes::from_static(b"alice"));
    assert_eq!(hits[0].addr, SocketAddrV4::new(*addr(11, 0).ip(), 2001));
    assert_eq!(hits[0].tags[0].id, TAG_FILENAME);
    assert_eq!(out.last(), Some(&Action::Send(2, Reply::End(0))));
    // The sharer does not find its own file; a word that nobody has finds nothing.
    out.clear();
    s.receive(1, query(1, "needle"), t, &mut out);
    s.receive(2, query(2, "needle haystack"), t, &mut out);
    assert!(hits_of(&out, 1).is_empty() && hits_of(&out, 2).is_empty());
    // By hash.
    out.clear();
    let h = share("other.mp3", 2).hash;
    s.receive(
        2,
        Request::Query(Query {
            id: 3,
            max_results: 10,
            realm: 0xBF,
            terms: vec![Term {
                cmp: 0,
                tag: TAG_HASH,
                value: Bytes::copy_from_slice(&h),
            }],
        }),
        t,
        &mut out,
    );
    assert_eq!(hits_of(&out, 2).len(), 1);
}

#[test]
fn a_user_leaving_takes_its_files_and_unshare_removes_one() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut out = Vec::new();
    s.receive(1, Request::Share(share("song one.mp3", 1)), t, &mut out);
    s.receive(1, Request::Share(share("song two.mp3", 2)), t, &mut out);
    assert_eq!(s.files_indexed(), 2);
    s.receive(
        1,
        Request::Unshare(share("song one.mp3", 1).hash),
        t,
        &mut out,
    );
    s.receive(2, query(0, "song"), t, &mut out);
    assert_eq!(hits_of(&out, 2).len(), 1);
    s.disconnect(1);
    assert_eq!(s.files_indexed(), 0);
    out.clear();
    s.receive(2, query(1, "song"), t, &mut out);
    assert!(hits_of(&out, 2).is_empty());
    assert!(s.words.is_empty() && s.by_hash.is_empty());
}

#[test]
fn shares_are_capped_per_user_and_in_total() {
    let mut s = Supernode::new(Config {
        max_files_per_user: 3,
        max_files_total: 5,
        share_rate: Rate::new(1000.0, 1000.0),
        ..Config::default()
    });
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    login(&mut s, 2, "b", t);
    let mut out = Vec::new();
    for i in 0..10 {
        s.receive(1, Request::Share(share(&format!("f{i}"), i)), t, &mut out);
    }
    assert_eq!(s.stats().shares_over_user_cap, 7);
    for i in 0..10 {
        s.receive(2, Request::Share(share(&format!("g{i}"), i)), t, &mut out);
    }
    assert_eq!(s.files_indexed(), 5);
    assert_eq!(s.stats().shares_over_total_cap, 8);
    // Before the login, or without a name: refused.
    s.connect(3, addr(3, 1), t, &mut out);
    s.receive(3, Request::Share(share("x", 1)), t, &mut out);
    assert_eq!(s.stats().shares_refused, 1);
}

#[test]
fn a_share_flood_is_dropped_then_closed() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    let mut out = Vec::new();
    for i in 0..5000u32 {
        s.receive(
            1,
            Request::Share(share(&format!("f{i}"), i as u8)),
            t,
            &mut out,
        );
    }
    assert!(s.stats().shares_over_rate > 0);
    assert!(out.contains(&Action::Close(1, CloseReason::Flood)));
    assert_eq!(s.users_online(), 0);
    assert_eq!(s.files_indexed(), 0);
}

#[test]
fn a_search_flood_is_answered_empty_then_closed() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    let mut out = Vec::new();
    for i in 0..100 {
        s.receive(1, query(i, "x"), t, &mut out);
    }
    assert_eq!(s.stats().searches, 10);
    assert!(s.stats().searches_over_rate > 0);
    assert!(out.contains(&Action::Close(1, CloseReason::Flood)));
}

#[test]
fn a_push_goes_to_the_named_user_and_an_unknown_one_is_counted() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut out = Vec::new();
    let push = |user: &str| {
        Request::Push(PushRequest {
            push_id: 9,
            requester: addr(12, 5555),
            target: SocketAddrV4::new(*addr(11, 0).ip(), 0),
            target_supernode: addr(1, 1214),
            target_user: Bytes::copy_from_slice(user.as_bytes()),
        })
    };
    s.receive(2, push("alice"), t, &mut out);
    assert_eq!(
        out,
        vec![Action::Send(
            1,
            Reply::Push {
                push_id: 9,
                requester: addr(12, 5555)
            }
        )]
    );
    out.clear();
    s.receive(2, push("carol"), t, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.stats().pushes_unknown, 1);
}

#[test]
fn quiet_users_are_pinged_and_dead_ones_dropped() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    let mut out = Vec::new();
    s.receive(1, Request::Ping, t, &mut out);
    assert_eq!(out, vec![Action::Send(1, Reply::Pong)]);
    out.clear();
    s.tick(t + Duration::from_secs(100), &mut out);
    assert_eq!(out, vec![Action::Send(1, Reply::Ping)]);
    out.clear();
    s.tick(t + Duration::from_secs(200), &mut out);
    assert_eq!(out, vec![Action::Close(1, CloseReason::Dead)]);
    // A session that never logs in goes too.
    s.connect(2, addr(2, 1), t, &mut out);
    out.clear();
    s.tick(t + Duration::from_secs(31), &mut out);
    assert_eq!(out, vec![Action::Close(2, CloseReason::NoLogin)]);
}

#[test]
fn bridged_hits_arrive_while_the_search_is_open() {
    let mut s = Supernode::new(Config {
        bridge_wait: Duration::from_secs(5),
        max_results: 3,
        ..Config::default()
    });
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    let mut out = Vec::new();
    s.receive(1, query(4, "far away"), t, &mut out);
    assert!(out.contains(&Action::Bridge {
        session: 1,
        id: 4,
        text: "far away".into(),
        hash: None
    }));
    assert!(!out.contains(&Action::Send(1, Reply::End(4))));
    let hit = Hit {
        addr: addr(50, 6346),
        bandwidth: 0,
        user: Bytes::from_static(b"g"),
        hash: [3; 20],
        file_id: 1,
        size: 9,
        tags: vec![],
    };
    out.clear();
    s.bridged(1, 4, vec![hit.clone(); 5], &mut out);
    assert_eq!(hits_of(&out, 1).len(), 3);
    assert_eq!(s.stats().bridged_late, 2);
    out.clear();
    s.tick(t + Duration::from_secs(6), &mut out);
    assert_eq!(out, vec![Action::Send(1, Reply::End(4))]);
    s.bridged(1, 4, vec![hit], &mut out);
    assert_eq!(s.stats().bridged_late, 3);
}

#[test]
fn the_nodes_own_files_answer_searches() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    s.clear_own_files(addr(1, 6346), b"servent");
    s.change_own_files(&[], vec![(5, share("own file.txt", 1))]);
    let mut out = Vec::new();
    s.receive(1, query(0, "own"), t, &mut out);
    let hits = hits_of(&out, 1);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].addr, addr(1, 6346));
    assert_eq!(s.files_indexed(), 0);
    s.clear_own_files(addr(1, 6346), b"servent");
    assert!(s.words.is_empty() && s.by_hash.is_empty() && s.files.is_empty());
}

#[test]
fn the_nodes_own_files_change_by_what_changed() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "a", t);
    let found = |s: &mut Supernode, id: u16, text: &str| {
        let mut out = Vec::new();
        s.receive(1, query(id, text), t, &mut out);
        let mut names: Vec<String> = hits_of(&out, 1)
            .iter()
            .map(|h| {
                let name = h.tags.iter().find(|t| t.id == TAG_FILENAME).unwrap();
                String::from_utf8_lossy(&name.value).into_owned()
            })
            .collect();
        names.sort();
        names
    };
    s.clear_own_files(addr(1, 6346), b"servent");
    s.change_own_files(
        &[],
        vec![
            (1, share("alpha one.mp3", 1)),
            (2, share("alpha two.mp3", 2)),
        ],
    );
    assert_eq!(
        found(&mut s, 0, "alpha"),
        ["alpha one.mp3", "alpha two.mp3"]
    );
    // One gone, one new, one given again under its key (replaced, not
    // doubled), and a key never given removed (nothing happens).
    s.change_own_files(
        &[1, 9],
        vec![
            (3, share("alpha three.mp3", 3)),
            (2, share("alpha deux.mp3", 2)),
        ],
    );
    assert_eq!(s.own_files(), 2);
    assert_eq!(
        found(&mut s, 1, "alpha"),
        ["alpha deux.mp3", "alpha three.mp3"]
    );
    assert!(found(&mut s, 2, "one").is_empty());
    assert!(found(&mut s, 3, "two").is_empty());
    s.change_own_files(&[2, 3], vec![]);
    assert_eq!(s.own_files(), 0);
    assert!(found(&mut s, 4, "alpha").is_empty());
    assert!(s.words.is_empty());
}

/// Files sharing a hash, added and removed in any order: the ring stays whole
/// and lists them in the order they came, as a plain list would.
#[test]
fn files_with_one_hash_stay_in_order_through_any_removals() {
    let mut s = node();
    let mut model: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..3_000u32 {
        let h = (next() % 3) as usize;
        let held: usize = model.iter().map(Vec::len).sum();
        if next() % 5 < 3 || held == 0 {
            let mut f = share(&format!("file {step}.mp3"), h as u8);
            f.hash = [h as u8; 20];
            let slot = s.insert_file(1 + u64::from(step % 7), f).expect("room");
            model[h].push(slot);
        } else {
            let mut pick = (next() % held as u64) as usize;
            let (h, i) = model
                .iter()
                .enumerate()
                .find_map(|(h, v)| {
                    if pick < v.len() {
                        Some((h, pick))
                    } else {
                        pick -= v.len();
                        None
                    }
                })
                .expect("a held file");
            let slot = model[h].remove(i);
            s.remove_file(slot);
        }
        for (h, want) in model.iter().enumerate() {
            let got: Vec<u32> = s.same_hash(&[h as u8; 20]).map(|(slot, _)| slot).collect();
            assert_eq!(&got, want, "hash {h} after step {step}");
            for &slot in want {
                let f = s.entry(slot);
                assert_eq!(s.entry(f.next).prev, slot);
                assert_eq!(s.entry(f.prev).next, slot);
            }
        }
    }
    for v in &model {
        for &slot in v {
            s.remove_file(slot);
        }
    }
    assert!(s.by_hash.is_empty() && s.words.is_empty());
}

/// A file's tags come back in results as they were shared, the name first,
/// however they were packed.
#[test]
fn a_files_tags_come_back_in_its_results() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut f = share("tagged song.mp3", 4);
    f.tags = vec![
        Tag {
            id: 0x06,
            value: Bytes::from_static(b"Some Artist"),
        },
        Tag {
            id: 0x15,
            value: Bytes::new(),
        },
        Tag {
            id: TAG_FILENAME,
            value: Bytes::from_static(b"tagged song.mp3"),
        },
        Tag {
            id: 0x0D,
            value: Bytes::from_static(&[0, 1, 2, 0xFF]),
        },
    ];
    let mut out = Vec::new();
    s.receive(1, Request::Share(f.clone()), t, &mut out);
    s.receive(2, query(0, "artist"), t, &mut out);
    let hits = hits_of(&out, 2);
    assert_eq!(hits.len(), 1, "found by a tag other than the name");
    let ids: Vec<u32> = hits[0].tags.iter().map(|t| t.id).collect();
    assert_eq!(ids[0], TAG_FILENAME);
    let mut want = f.tags.clone();
    let mut got = hits[0].tags.clone();
    want.sort_by_key(|t| t.id);
    got.sort_by_key(|t| t.id);
    assert_eq!(got, want);
    assert_eq!(
        (hits[0].hash, hits[0].size, hits[0].file_id),
        (f.hash, f.size, f.file_id)
    );
    assert!(s.file_at(0, b"tagged song.mp3").is_some());
    assert!(s.file_at(0, b"other.mp3").is_none());
}

/// giFT's `auto_search_more` (2 by default) sends each search again after its
/// 0x08, twice, with the same id: a user searching eight times in a second
/// sends 24 searches. The repeats end at once, are not charged to the rate,
/// and send no result twice; a new search under the same id still counts.
#[test]
fn gifts_repeated_searches_end_at_once_and_cost_nothing() {
    for bridge_wait in [Duration::ZERO, Duration::from_secs(2)] {
        let mut s = Supernode::new(Config {
            bridge_wait,
            ..Config::default()
        });
        let t = Instant::now();
        login(&mut s, 1, "alice", t);
        login(&mut s, 2, "bob", t);
        let mut out = Vec::new();
        for n in 0..8u8 {
            s.receive(
                1,
                Request::Share(share(&format!("word{n} song.mp3"), n)),
                t,
                &mut out,
            );
        }
        let mut now = t;
        for n in 0..8u16 {
            for send in 0..3 {
                out.clear();
                s.receive(2, query(n, &format!("word{n}")), now, &mut out);
                // The bridge, if any, ends the search a little later.
                now += Duration::from_millis(40);
                s.tick(now + bridge_wait, &mut out);
                let hits = hits_of(&out, 2).len();
                assert_eq!(hits, usize::from(send == 0), "search {n}, send {send}");
                assert!(
                    out.contains(&Action::Send(2, Reply::End(n))),
                    "search {n} ended"
                );
                assert!(
                    send == 0 || !out.iter().any(|a| matches!(a, Action::Bridge { .. })),
                    "a repeat is not bridged again"
                );
            }
        }
        let st = s.stats();
        assert_eq!((st.searches, st.searches_repeated), (8, 16));
        assert_eq!((st.searches_over_rate, st.closed_flood), (0, 0));
        assert_eq!(s.users_online(), 2);
        // Other words under an id just used: a new search, answered.
        out.clear();
        s.receive(2, query(7, "word3"), now, &mut out);
        s.tick(now + bridge_wait, &mut out);
        assert_eq!(hits_of(&out, 2).len(), 1);
        assert_eq!(s.stats().searches, 9);
        // Repeats are free a few times only; the next counts as a search
        // again (and is answered again), and the count starts over.
        for _ in 0..FREE_REPEATS + 2 {
            out.clear();
            s.receive(2, query(7, "word3"), now, &mut out);
            s.tick(now + bridge_wait, &mut out);
        }
        assert_eq!(
            s.stats().searches_repeated,
            16 + u64::from(FREE_REPEATS) + 1
        );
        assert_eq!(s.stats().searches, 10);
        // A minute later the same search is new again.
        out.clear();
        let later = now + bridge_wait + REPEAT_WITHIN + Duration::from_secs(1);
        s.receive(2, query(2, "word2"), later, &mut out);
        s.tick(later + bridge_wait, &mut out);
        assert_eq!(hits_of(&out, 2).len(), 1);
    }
}

/// giFT may send a whole burst of searches before the first 0x08 comes back,
/// then repeat each twice: fourteen searches, ten within the burst. The four
/// over the rate are refused once; their repeats, like the others', cost
/// nothing, and the user stays.
#[test]
fn a_pipelined_burst_and_its_repeats_do_not_close_the_user() {
    let mut s = node();
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut out = Vec::new();
    s.receive(1, Request::Share(share("burst song.mp3", 1)), t, &mut out);
    for n in 0..14u16 {
        s.receive(2, query(n, &format!("burst w{n}")), t, &mut out);
    }
    for _ in 0..2 {
        for n in 0..14u16 {
            s.receive(2, query(n, &format!("burst w{n}")), t, &mut out);
        }
    }
    let st = s.stats();
    assert_eq!((st.searches, st.searches_over_rate), (10, 4));
    assert_eq!((st.searches_repeated, st.closed_flood), (28, 0));
    assert_eq!(s.users_online(), 2);
    let ends = out
        .iter()
        .filter(|a| matches!(a, Action::Send(2, Reply::End(_))))
        .count();
    assert_eq!(ends, 42, "every send ended");
}

/// Past the searches a user may have open, a search is still answered from
/// the supernode's users, only not bridged: a burst sent before the first
/// 0x08 returns gets every result.
#[test]
fn a_search_past_the_open_ones_is_answered_not_bridged() {
    let mut s = Supernode::new(Config {
        bridge_wait: Duration::from_secs(4),
        ..Config::default()
    });
    let t = Instant::now();
    login(&mut s, 1, "alice", t);
    login(&mut s, 2, "bob", t);
    let mut out = Vec::new();
    s.receive(1, Request::Share(share("open song.mp3", 1)), t, &mut out);
    for n in 0..10u16 {
        out.clear();
        s.receive(2, query(n, "open song"), t, &mut out);
        assert_eq!(hits_of(&out, 2).len(), 1, "search {n} answered");
        let bridged = out.iter().any(|a| matches!(a, Action::Bridge { .. }));
        let ended = out.contains(&Action::Send(2, Reply::End(n)));
        assert_eq!((bridged, ended), (n < 8, n >= 8), "search {n}");
    }
    assert_eq!(s.stats().searches_over_open, 2);
    assert_eq!(s.stats().searches, 10);
}
