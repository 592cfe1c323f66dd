// cxpulse live page: polls api/series and draws one of three views plus the
// pipeline's health. No library, nothing fetched but api/series.
// The DOM contract (data-key, data-value, data-empty, body data-state, ...)
// is described in docs/live-page.md; the browser test reads it.
(function () {
  'use strict';

  var VIEWS = ['support', 'growth', 'retention'];
  var PRIORITIES = ['urgent', 'high', 'normal', 'low'];
  var OUTCOMES = ['applied', 'invalid', 'late', 'duplicate'];
  var HISTORY_POINTS = 180;

  var body = document.body;
  var params = new URLSearchParams(window.location.search);
  var refreshSeconds = Number(params.get('refresh'));
  if (!(refreshSeconds >= 0.5 && refreshSeconds <= 3600)) {
    refreshSeconds = 5;
  }

  var st = {
    view: VIEWS.indexOf(params.get('view')) >= 0 ? params.get('view') : 'support',
    window: params.get('window') || '',
    data: null, // the indexed last answer
    prev: null, // the one before, for rates
    history: new Map(), // key -> [values], sparklines
    timer: null
  };

  // ---------- formatting ----------

  function finite(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function trimZero(s) {
    return s.indexOf('.') >= 0 ? s.replace(/\.?0+$/, '') : s;
  }

  function pad2(n) {
    return n < 10 ? '0' + n : String(n);
  }

  var FMT = {
    count: function (v) {
      if (Number.isInteger(v)) {
        return v.toLocaleString('en-US');
      }
      return v.toLocaleString('en-US', { maximumFractionDigits: 2 });
    },
    ratio: function (v) {
      var x = v * 100;
      var s = Math.abs(x) >= 99.95 || Math.abs(x) < 0.05 ? x.toFixed(0) : x.toFixed(1);
      return trimZero(s) + '%';
    },
    usd: function (v) {
      var a = Math.abs(v);
      var digits = a >= 10000 ? 0 : 2;
      var s = a.toLocaleString('en-US', {
        minimumFractionDigits: digits,
        maximumFractionDigits: digits
      });
      return (v < 0 ? '-$' : '$') + s;
    },
    seconds: function (v) {
      var a = Math.abs(v);
      var sign = v < 0 ? '-' : '';
      if (a < 1) {
        return sign + Math.round(a * 1000) + ' ms';
      }
      if (a < 10) {
        return sign + trimZero(a.toFixed(1)) + 's';
      }
      var t = Math.round(a);
      if (t < 60) {
        return sign + t + 's';
      }
      if (t < 3600) {
        return sign + Math.floor(t / 60) + 'm ' + pad2(t % 60) + 's';
      }
      if (t < 86400) {
        return sign + Math.floor(t / 3600) + 'h ' + pad2(Math.floor((t % 3600) / 60)) + 'm';
      }
      return sign + Math.floor(t / 86400) + 'd ' + pad2(Math.floor((t % 86400) / 3600)) + 'h';
    },
    nps: function (v) {
      var s = trimZero(v.toFixed(1));
      return v > 0 ? '+' + s : s;
    },
    score: function (v) {
      return v.toFixed(2);
    },
    factor: function (v) {
      return v >= 10 ? v.toFixed(1) : v.toFixed(3);
    },
    rate: function (v) {
      if (v === 0) {
        return '0/s';
      }
      if (Math.abs(v) < 10) {
        return trimZero(v.toFixed(2)) + '/s';
      }
      return Math.round(v).toLocaleString('en-US') + '/s';
    }
  };

  function format(kind, v) {
    if (!finite(v)) {
      return 'no value';
    }
    var f = FMT[kind] || FMT.count;
    var s = f(v);
    // Belt and braces: never show these words.
    return /NaN|undefined|Infinity/.test(s) ? 'no value' : s;
  }

  // Durations of window labels (`1h`, `24h`, `7d`, `30d`, `90m`, `45s`).
  function windowSeconds(w) {
    var m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(w || '');
    if (!m) {
      return Number.MAX_VALUE;
    }
    var unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]];
    return Number(m[1]) * unit;
  }

  // ---------- series lookup ----------

  function esc(v) {
    return String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  }

  // The same key as the server's export::series_key: name{k="v",...}, labels sorted.
  function seriesKey(name, labels) {
    var ks = Object.keys(labels).sort();
    return name + '{' + ks.map(function (k) {
      return k + '="' + esc(labels[k]) + '"';
    }).join(',') + '}';
  }

  function indexData(d) {
    if (!d || !Array.isArray(d.series) || !Array.isArray(d.absent) || !Array.isArray(d.pipeline)) {
      throw new Error('unexpected answer from api/series (no series, absent or pipeline list)');
    }
    var x = {
      raw: d,
      values: new Map(),
      absent: new Set(),
      byName: new Map(),
      pipeline: new Map(), // name -> [{labels, value}]
      windows: new Set()
    };
    function add(s, hasValue) {
      if (hasValue) {
        x.values.set(s.key, s.value);
      } else {
        x.absent.add(s.key);
      }
      var list = x.byName.get(s.name);
      if (!list) {
        list = [];
        x.byName.set(s.name, list);
      }
      list.push(s);
      if (s.labels && typeof s.labels.window === 'string') {
        x.windows.add(s.labels.window);
      }
    }
    d.series.forEach(function (s) {
      if (finite(s.value)) {
        add(s, true);
      }
    });
    d.absent.forEach(function (s) {
      add(s, false);
    });
    d.pipeline.forEach(function (s) {
      if (!finite(s.value)) {
        return;
      }
      var list = x.pipeline.get(s.name);
      if (!list) {
        list = [];
        x.pipeline.set(s.name, list);
      }
      list.push(s);
    });
    return x;
  }

  // Label values of `label` among the series called `name` (matching `where`).
  function labelValues(name, label, where) {
    var out = [];
    var list = st.data.byName.get(name) || [];
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      var v = s.labels[label];
      if (ok && typeof v === 'string' && out.indexOf(v) < 0) {
        out.push(v);
      }
    });
    return out;
  }

  function lookup(name, labels) {
    var k = seriesKey(name, labels);
    if (st.data.values.has(k)) {
      return { key: k, value: st.data.values.get(k) };
    }
    return { key: k, value: null, absent: st.data.absent.has(k) };
  }

  // Sum of the series `name` whose labels match `where` (null when none).
  function sum(name, where) {
    var list = st.data.byName.get(name) || [];
    var total = null;
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      if (ok && st.data.values.has(s.key)) {
        total = (total || 0) + s.value;
      }
    });
    return total;
  }

  // ---------- empty states ----------

  function absentReason(name, l) {
    var w = l.window ? ' in ' + l.window : '';
    if (/^cxpulse_csat_ratio/.test(name)) return 'no CSAT answers' + w;
    if (/^cxpulse_nps/.test(name)) return 'no NPS answers' + w;
    if (/^cxpulse_ces_/.test(name)) return 'no CES answers' + w;
    if (name === 'cxpulse_support_first_response_quantile_seconds') return 'no first responses' + w;
    if (name === 'cxpulse_support_resolution_quantile_seconds') return 'no resolutions' + w;
    if (name === 'cxpulse_sla_breach_ratio') return 'no SLA decided' + w;
    if (name === 'cxpulse_cpa_usd') return 'no acquisitions' + w;
    if (name === 'cxpulse_conversion_ratio') return 'no signups' + w;
    if (name === 'cxpulse_channel_share_ratio') return 'no signups' + w;
    if (name === 'cxpulse_referral_signup_share_ratio') return 'no signups' + w;
    if (name === 'cxpulse_referral_invite_conversion_ratio') return 'no invites' + w;
    if (name === 'cxpulse_referral_k_factor') return 'no active customers' + w;
    if (name === 'cxpulse_arpu_usd') return 'no active customers' + w;
    if (name === 'cxpulse_clv_usd') return 'no active customers in 30d';
    if (name === 'cxpulse_user_growth_ratio') return 'no users yet';
    if (name === 'cxpulse_churn_ratio') return 'no active customers at the start of' + w.replace(' in', '');
    if (name === 'cxpulse_post_support_churn_ratio') {
      return 'no ' + (l.experience || '') + ' CSAT answers old enough to judge';
    }
    if (name === 'cxpulse_retention_ratio') return 'no active users in the ' + (l.window || 'window') + ' before';
    if (name === 'cxpulse_cohort_retention_ratio') return 'no signups in the day-' + l.day + ' cohort';
    return 'no data' + w;
  }

  function missingReason(name, l) {
    if (name === 'cxpulse_retention_ratio' && l.window && windowSeconds(l.window) % 86400 !== 0) {
      return 'only for whole-day windows';
    }
    if (name === 'cxpulse_clv_usd') return 'needs the 30d window';
    return l.window ? 'no data in ' + l.window : 'no data yet';
  }

  // ---------- DOM helpers ----------

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'class') {
        el.className = attrs[k];
      } else if (k === 'text') {
        el.textContent = attrs[k];
      } else {
        el.setAttribute(k, attrs[k]);
      }
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) {
        return;
      }
      el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return el;
  }

  // The element of one series: data-key always; data-value and the
  // formatted value, or data-empty and the reason.
  function val(name, labels, kind, cls) {
    var r = lookup(name, labels);
    var el = h('span', { class: 'v' + (cls ? ' ' + cls : '') });
    el.dataset.key = r.key;
    if (finite(r.value)) {
      el.dataset.value = String(r.value);
      el.textContent = format(kind, r.value);
    } else {
      var why = r.absent ? absentReason(name, labels) : missingReason(name, labels);
      el.dataset.empty = why;
      el.textContent = why;
      el.classList.add('empty');
    }
    return el;
  }

  // A number computed here (a sum, a rate): data-key names how.
  function derived(key, v, kind, emptyWhy, cls) {
    var el = h('span', { class: 'v derived' + (cls ? ' ' + cls : '') });
    el.dataset.key = key;
    if (finite(v)) {
      el.dataset.value = String(v);
      el.textContent = format(kind, v);
    } else {
      el.dataset.empty = emptyWhy;
      el.textContent = emptyWhy;
      el.classList.add('empty');
    }
    return el;
  }

  function remember(key, v) {
    if (!finite(v)) {
      return;
    }
    var list = st.history.get(key);
    if (!list) {
      list = [];
      st.history.set(key, list);
    }
    list.push(v);
    if (list.length > HISTORY_POINTS) {
      list.shift();
    }
  }

  var SVG = 'http://www.w3.org/2000/svg';

  // Sparkline of a key's history (kept in the page since it was opened).
  function spark(key) {
    var pts = st.history.get(key) || [];
    var w = 240;
    var ht = 48;
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + ht);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-hidden', 'true');
    if (pts.length < 2) {
      var base = document.createElementNS(SVG, 'line');
      base.setAttribute('x1', '0');
      base.setAttribute('x2', String(w));
      base.setAttribute('y1', String(ht - 2));
      base.setAttribute('y2', String(ht - 2));
      base.setAttribute('class', 'spark-base');
      svg.appendChild(base);
      return svg;
    }
    var lo = Math.min.apply(null, pts);
    var hi = Math.max.apply(null, pts);
    var span = hi - lo || 1;
    var step = w / (HISTORY_POINTS - 1);
    var x0 = w - step * (pts.length - 1);
    var coords = pts.map(function (v, i) {
      var x = x0 + i * step;
      var y = ht - 4 - ((v - lo) / span) * (ht - 8);
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    var line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', coords.join(' '));
    line.setAttribute('class', 'spark-line');
    svg.appendChild(line);
    return svg;
  }

  function tile(title, main, extra, sparkKey, cls) {
    return h('section', { class: 'tile' + (cls ? ' ' + cls : '') }, [
      h('h2', { text: title }),
      h('div', { class: 'big' }, [main]),
      extra ? h('div', { class: 'sub' }, extra) : null,
      sparkKey ? spark(sparkKey) : null
    ]);
  }

  function interval(name, labels, kind) {
    return [
      h('span', { class: 'muted', text: '95% CI ' }),
      val(name + '_ci_lower', labels, kind),
      h('span', { class: 'muted', text: ' to ' }),
      val(name + '_ci_upper', labels, kind)
    ];
  }

  function cap(s) {
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  // Adds a class to a value element by a rule on its value.
  function mark(el, cls, when) {
    var v = Number(el.dataset.value);
    if (el.dataset.value !== undefined && when(v)) {
      el.classList.add(cls);
    }
    return el;
  }

  // ---------- views ----------

  function supportView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view support' });
    var open = sum('cxpulse_support_open_tickets', {});
    remember('sum(cxpulse_support_open_tickets)', open);
    var breachFr = sum('cxpulse_support_open_tickets_breaching', { kind: 'first_response' });
    var breachRes = sum('cxpulse_support_open_tickets_breaching', { kind: 'resolution' });
    var riskFr = sum('cxpulse_support_tickets_at_risk', { kind: 'first_response' });
    var riskRes = sum('cxpulse_support_tickets_at_risk', { kind: 'resolution' });
    var noTickets = 'no ticket data yet';
    var csatKey = seriesKey('cxpulse_csat_ratio', wl);
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Open tickets', derived('sum(cxpulse_support_open_tickets)', open, 'count', noTickets), null,
        'sum(cxpulse_support_open_tickets)'),
      tile('Breaching now', mark(derived('sum(cxpulse_support_open_tickets_breaching{kind="first_response"})',
        breachFr, 'count', noTickets), 'bad', function (v) { return v > 0; }), [
        h('span', { class: 'muted', text: 'waiting for a first reply; ' }),
        mark(derived('sum(cxpulse_support_open_tickets_breaching{kind="resolution"})', breachRes, 'count',
          noTickets), 'bad', function (v) { return v > 0; }),
        h('span', { class: 'muted', text: ' past resolution' })
      ], null, 'alert'),
      tile('At risk', mark(derived('sum(cxpulse_support_tickets_at_risk{kind="first_response"})', riskFr,
        'count', noTickets), 'warn', function (v) { return v > 0; }), [
        h('span', { class: 'muted', text: 'first reply; ' }),
        mark(derived('sum(cxpulse_support_tickets_at_risk{kind="resolution"})', riskRes, 'count', noTickets),
          'warn', function (v) { return v > 0; }),
        h('span', { class: 'muted', text: ' resolution' })
      ]),
      tile('CSAT ' + w, mark(val('cxpulse_csat_ratio', wl, 'ratio'), 'bad', function (v) { return v < 0.7; }), [
        h('div', {}, interval('cxpulse_csat_ratio', wl, 'ratio')),
        h('div', {}, [val('cxpulse_csat_responses', wl, 'count'), h('span', { class: 'muted', text: ' answers' })])
      ], csatKey)
    ]));

    var sla = (st.data.raw.sla && st.data.raw.sla.targets) || {};
    var head = h('tr', {}, [
      h('th', { text: 'Priority' }),
      h('th', { text: 'Open' }),
      h('th', { text: 'Breaching' }),
      h('th', { text: 'At risk' }),
      h('th', { class: 'group', text: 'First response p50 / p90' }),
      h('th', { class: 'group', text: 'Resolution p50 / p90' }),
      h('th', { text: 'Breach ratio ' + w })
    ]);
    var sub = h('tr', { class: 'subhead' }, [
      h('th', {}), h('th', {}),
      h('th', { text: 'reply / resolve' }),
      h('th', { text: 'reply / resolve' }),
      h('th', { class: 'group', text: 'target' }),
      h('th', { class: 'group', text: 'target' }),
      h('th', { text: 'reply / resolve' })
    ]);
    var rows = PRIORITIES.map(function (p) {
      var t = sla[p] || {};
      function q(kind, quantile, target) {
        var el = val('cxpulse_support_' + kind + '_quantile_seconds', { window: w, priority: p, quantile: quantile },
          'seconds');
        if (finite(target)) {
          mark(el, quantile === '0.9' ? 'bad' : 'warn', function (v) { return v > target; });
        }
        return el;
      }
      function quant(kind, target) {
        return h('td', { class: 'group' }, [
          q(kind, '0.5', target), h('span', { class: 'muted', text: ' / ' }), q(kind, '0.9', target),
          h('div', { class: 'target' }, [
            h('span', { class: 'muted', text: 'target ' }),
            finite(target) ? derived('sla.targets.' + p + '.' + kind + '_seconds', target, 'seconds', '')
              : h('span', { class: 'muted', text: 'not configured' })
          ])
        ]);
      }
      function pair(name, cls, kind) {
        var a = mark(val(name, { priority: p, kind: 'first_response' }, kind || 'count'), cls,
          function (v) { return v > 0; });
        var b = mark(val(name, { priority: p, kind: 'resolution' }, kind || 'count'), cls,
          function (v) { return v > 0; });
        return h('td', {}, [a, h('span', { class: 'muted', text: ' / ' }), b]);
      }
      function ratios() {
        var a = mark(val('cxpulse_sla_breach_ratio', { window: w, priority: p, kind: 'first_response' }, 'ratio'),
          'bad', function (v) { return v > 0.1; });
        var b = mark(val('cxpulse_sla_breach_ratio', { window: w, priority: p, kind: 'resolution' }, 'ratio'),
          'bad', function (v) { return v > 0.1; });
        return h('td', {}, [a, h('span', { class: 'muted', text: ' / ' }), b]);
      }
      return h('tr', { class: 'prio-' + p }, [
        h('th', { class: 'prio', text: cap(p) }),
        h('td', {}, [val('cxpulse_support_open_tickets', { priority: p }, 'count', 'strong')]),
        pair('cxpulse_support_open_tickets_breaching', 'bad'),
        pair('cxpulse_support_tickets_at_risk', 'warn'),
        quant('first_response', t.first_response_seconds),
        quant('resolution', t.resolution_seconds),
        ratios()
      ]);
    });
    root.appendChild(h('table', { class: 'grid support-grid' }, [h('thead', {}, [head, sub]), h('tbody', {}, rows)]));
    return root;
  }

  function channelsOf(w) {
    var chans = labelValues('cxpulse_signups', 'channel', { window: w });
    labelValues('cxpulse_marketing_spend_usd', 'channel', { window: w }).forEach(function (c) {
      if (chans.indexOf(c) < 0) chans.push(c);
    });
    function n(c) {
      var r = lookup('cxpulse_signups', { window: w, channel: c });
      return finite(r.value) ? r.value : -1;
    }
    return chans.sort(function (a, b) {
      return n(b) - n(a) || (a < b ? -1 : 1);
    });
  }

  function growthView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view growth' });
    var signups = sum('cxpulse_signups', wl);
    var spend = sum('cxpulse_marketing_spend_usd', wl);
    var revenue = sum('cxpulse_revenue_usd', wl);
    var acq = sum('cxpulse_acquisitions', wl);
    remember('sum(cxpulse_signups{window="' + w + '"})', signups);
    var none = 'no data in ' + w;
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Signups ' + w, derived('sum(cxpulse_signups{window="' + w + '"})', signups, 'count', none), [
        val('cxpulse_users', {}, 'count'), h('span', { class: 'muted', text: ' users in all' })
      ], 'sum(cxpulse_signups{window="' + w + '"})'),
      tile('User growth ' + w, val('cxpulse_user_growth_ratio', wl, 'ratio'), null,
        seriesKey('cxpulse_user_growth_ratio', wl)),
      tile('CPA ' + w + ', all channels', derived('sum(spend)/sum(acquisitions)', acq > 0 ? spend / acq : null,
        'usd', acq === null ? none : 'no acquisitions in ' + w), [
        derived('sum(cxpulse_marketing_spend_usd{window="' + w + '"})', spend, 'usd', none),
        h('span', { class: 'muted', text: ' spent, ' }),
        derived('sum(cxpulse_acquisitions{window="' + w + '"})', acq, 'count', none),
        h('span', { class: 'muted', text: ' first deposits' })
      ]),
      tile('Referral k-factor ' + w, val('cxpulse_referral_k_factor', wl, 'factor'), [
        val('cxpulse_referral_signup_share_ratio', wl, 'ratio'),
        h('span', { class: 'muted', text: ' of signups referred; ' }),
        val('cxpulse_referral_invite_conversion_ratio', wl, 'ratio'),
        h('span', { class: 'muted', text: ' of invites convert' })
      ], seriesKey('cxpulse_referral_k_factor', wl)),
      tile('Revenue ' + w, derived('sum(cxpulse_revenue_usd{window="' + w + '"})', revenue, 'usd', none), null,
        null)
    ]));

    var chans = channelsOf(w);
    if (chans.length === 0) {
      root.appendChild(h('p', { class: 'placeholder', text: 'No channels yet: no signups or spend in ' + w + '.' }));
      return root;
    }
    var head = h('tr', {}, [
      h('th', { text: 'Channel' }),
      h('th', { text: 'Signups' }),
      h('th', { text: 'Share' }),
      h('th', { text: 'Spend' }),
      h('th', { text: 'Acquired' }),
      h('th', { text: 'CPA' }),
      h('th', { class: 'group', text: 'Funnel: signup \u2192 deposit \u2192 trade' }),
      h('th', { text: 'Revenue' }),
      h('th', { text: 'CLV' })
    ]);
    var rows = chans.map(function (c) {
      var cl = { window: w, channel: c };
      function stage(s) {
        var users = val('cxpulse_funnel_users', { window: w, channel: c, stage: s }, 'count');
        var ratio = val('cxpulse_conversion_ratio', { window: w, channel: c, stage: s }, 'ratio');
        var pct = Number(ratio.dataset.value);
        var bar = h('div', { class: 'bar' });
        bar.style.width = (ratio.dataset.value !== undefined ? Math.max(0, Math.min(1, pct)) * 100 : 0) + '%';
        return h('div', { class: 'stage' }, [bar, h('span', { class: 'stage-v' }, [users, ' (', ratio, ')'])]);
      }
      return h('tr', {}, [
        h('th', { text: c }),
        h('td', {}, [val('cxpulse_signups', cl, 'count', 'strong')]),
        h('td', {}, [val('cxpulse_channel_share_ratio', cl, 'ratio')]),
        h('td', {}, [val('cxpulse_marketing_spend_usd', cl, 'usd')]),
        h('td', {}, [val('cxpulse_acquisitions', cl, 'count')]),
        h('td', {}, [val('cxpulse_cpa_usd', cl, 'usd')]),
        h('td', { class: 'group funnel' }, [
          h('div', { class: 'stage' }, [h('span', { class: 'stage-v' }, [
            val('cxpulse_funnel_users', { window: w, channel: c, stage: 'signup' }, 'count')])]),
          stage('first_deposit'),
          stage('first_trade')
        ]),
        h('td', {}, [val('cxpulse_revenue_usd', cl, 'usd')]),
        h('td', {}, [val('cxpulse_clv_usd', { channel: c }, 'usd')])
      ]);
    });
    root.appendChild(h('table', { class: 'grid growth-grid' }, [h('thead', {}, [head]), h('tbody', {}, rows)]));
    return root;
  }

  function retentionView(w) {
    var wl = { window: w };
    var root = h('div', { class: 'view retention' });
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('Churn ' + w, mark(val('cxpulse_churn_ratio', wl, 'ratio'), 'bad', function (v) { return v > 0.05; }), [
        val('cxpulse_churned_customers', wl, 'count'), h('span', { class: 'muted', text: ' churned, ' }),
        val('cxpulse_reactivated_customers', wl, 'count'), h('span', { class: 'muted', text: ' came back; ' }),
        val('cxpulse_active_customers_now', {}, 'count'), h('span', { class: 'muted', text: ' active now' })
      ], seriesKey('cxpulse_churn_ratio', wl)),
      tile('Churn after a support contact ' + w, h('div', { class: 'pair' }, [
        h('div', {}, [h('div', { class: 'label', text: 'bad (CSAT \u2264 2)' }),
          mark(val('cxpulse_post_support_churn_ratio', { window: w, experience: 'negative' }, 'ratio'), 'bad',
            function (v) { return v > 0.2; })]),
        h('div', {}, [h('div', { class: 'label', text: 'good (CSAT \u2265 4)' }),
          val('cxpulse_post_support_churn_ratio', { window: w, experience: 'positive' }, 'ratio')])
      ]), [h('span', { class: 'muted', text: 'share of rated contacts whose customer left afterwards' })], null, 'wide'),
      tile('Retention ' + w, val('cxpulse_retention_ratio', wl, 'ratio'), [
        h('span', { class: 'muted', text: 'active again in the next ' + w + ' (whole UTC days)' })
      ], seriesKey('cxpulse_retention_ratio', wl)),
      tile('Cohorts', h('div', { class: 'pair three' }, ['1', '7', '30'].map(function (d) {
        return h('div', {}, [h('div', { class: 'label', text: 'D' + d }),
          val('cxpulse_cohort_retention_ratio', { day: d }, 'ratio')]);
      })), [h('span', { class: 'muted', text: 'signups active on day N' })])
    ]));
    root.appendChild(h('div', { class: 'tiles' }, [
      tile('NPS ' + w, val('cxpulse_nps', wl, 'nps'), [
        h('div', {}, interval('cxpulse_nps', wl, 'nps')),
        h('div', {}, ['promoter', 'passive', 'detractor'].map(function (c, i) {
          return h('span', {}, [i ? h('span', { class: 'muted', text: ' \u00b7 ' }) : null,
            val('cxpulse_nps_responses', { window: w, category: c }, 'count'),
            h('span', { class: 'muted', text: ' ' + c + 's' })]);
        }))
      ], seriesKey('cxpulse_nps', wl)),
      tile('CES ' + w + ' (1-7, 7 easiest)', val('cxpulse_ces_mean', wl, 'score'), [
        h('div', {}, [val('cxpulse_ces_easy_ratio', wl, 'ratio'), h('span', { class: 'muted', text: ' easy (5-7)' })]),
        h('div', {}, interval('cxpulse_ces_easy_ratio', wl, 'ratio')),
        h('div', {}, [val('cxpulse_ces_responses', wl, 'count'), h('span', { class: 'muted', text: ' answers' })])
      ], seriesKey('cxpulse_ces_mean', wl)),
      tile('CSAT ' + w, val('cxpulse_csat_ratio', wl, 'ratio'), [
        h('div', {}, interval('cxpulse_csat_ratio', wl, 'ratio')),
        h('div', {}, [val('cxpulse_csat_responses', wl, 'count'), h('span', { class: 'muted', text: ' answers' })])
      ], seriesKey('cxpulse_csat_ratio', wl))
    ]));
    return root;
  }

  // ---------- health corner ----------

  function pipelineSum(name, where) {
    var list = st.data.pipeline.get(name);
    if (!list) {
      return null;
    }
    var total = 0;
    list.forEach(function (s) {
      var ok = Object.keys(where || {}).every(function (k) {
        return s.labels[k] === where[k];
      });
      if (ok) total += s.value;
    });
    return total;
  }

  function rate(now, before, seconds) {
    if (!finite(now) || !finite(before) || !(seconds > 0)) {
      return { v: null, why: 'needs two refreshes' };
    }
    if (now < before) {
      return { v: null, why: 'counter reset' };
    }
    return { v: (now - before) / seconds, why: '' };
  }

  function health() {
    var d = st.data;
    var p = st.prev;
    var dt = p ? d.raw.wall_seconds - p.raw.wall_seconds : null;
    var box = document.getElementById('health');
    var items = [];
    var lagList = d.pipeline.get('cxpulse_consumer_lag') || [];
    var lag = lagList.length ? pipelineSum('cxpulse_consumer_lag', {}) : null;
    items.push(h('div', { class: 'hitem' }, [h('span', { class: 'hl', text: 'lag' }),
      mark(derived('sum(cxpulse_consumer_lag)', lag, 'count', 'no partitions assigned'), 'warn',
        function (v) { return v > 1000; })]));
    var rates = OUTCOMES.map(function (o) {
      var now = sum('cxpulse_events_total', { outcome: o });
      var before = null;
      if (p) {
        var save = st.data;
        st.data = p;
        before = sum('cxpulse_events_total', { outcome: o });
        st.data = save;
      }
      var r = p ? rate(now === null ? 0 : now, before === null ? 0 : before, dt)
        : { v: null, why: 'needs two refreshes' };
      var el = derived('rate(cxpulse_events_total{outcome="' + o + '"})', r.v, 'rate', r.why);
      if (o !== 'applied') mark(el, 'warn', function (v) { return v > 0; });
      return h('span', { class: 'rate' }, [h('span', { class: 'hl', text: o + ' ' }), el]);
    });
    items.push(h('div', { class: 'hitem events' }, [h('span', { class: 'hl', text: 'events' })].concat(rates)));
    var dl = pipelineSum('cxpulse_dead_letter_records_total', {});
    var dlBefore = null;
    if (p) {
      var save2 = st.data;
      st.data = p;
      dlBefore = pipelineSum('cxpulse_dead_letter_records_total', {});
      st.data = save2;
    }
    var dlr = p ? rate(dl === null ? 0 : dl, dlBefore === null ? 0 : dlBefore, dt)
      : { v: null, why: 'needs two refreshes' };
    items.push(h('div', { class: 'hitem' }, [h('span', { class: 'hl', text: 'dead letters' }),
      mark(derived('rate(cxpulse_dead_letter_records_total)', dlr.v, 'rate', dlr.why), 'warn',
        function (v) { return v > 0; })]));
    var clock = d.raw.clock_seconds;
    var behind = finite(clock) ? Math.round((d.raw.wall_seconds - clock) * 1000) / 1000 : null;
    var skew = derived('wall_seconds - clock_seconds', behind, 'seconds', 'no events yet');
    skew.id = 'clock-skew';
    mark(skew, 'warn', function (v) { return Math.abs(v) > 60; });
    items.push(h('div', { class: 'hitem' }, [h('span', { class: 'hl', text: 'T behind wall' }), skew]));
    var ready = h('span', { id: 'ready', class: d.raw.ready ? 'ok' : 'bad' });
    ready.dataset.ready = d.raw.ready ? 'true' : 'false';
    ready.textContent = d.raw.ready ? 'ready' : 'not ready: ' + (d.raw.ready_reason || 'no reason given');
    items.push(h('div', { class: 'hitem readiness' }, [ready]));
    box.replaceChildren.apply(box, items);
  }

  // ---------- page ----------

  function windows() {
    return Array.from(st.data.windows).sort(function (a, b) {
      return windowSeconds(a) - windowSeconds(b) || (a < b ? -1 : 1);
    });
  }

  function chooseWindow() {
    var ws = windows();
    if (ws.indexOf(st.window) >= 0) {
      return st.window;
    }
    if (ws.indexOf('24h') >= 0) {
      return '24h';
    }
    return ws.length ? ws[0] : '';
  }

  function syncUrl() {
    var q = new URLSearchParams(window.location.search);
    q.set('view', st.view);
    if (st.window) {
      q.set('window', st.window);
    }
    window.history.replaceState(null, '', '?' + q.toString());
  }

  function renderNav() {
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      var q = new URLSearchParams(window.location.search);
      q.set('view', a.dataset.view);
      a.setAttribute('href', '?' + q.toString());
      if (a.dataset.view === st.view) {
        a.setAttribute('aria-current', 'page');
      } else {
        a.removeAttribute('aria-current');
      }
    });
    var sel = document.getElementById('window');
    var ws = windows();
    var same = sel.options.length === ws.length && ws.every(function (w, i) {
      return sel.options[i].value === w;
    });
    if (!same) {
      sel.replaceChildren.apply(sel, ws.map(function (w) {
        return h('option', { value: w, text: w });
      }));
    }
    sel.value = st.window;
  }

  function render() {
    if (!st.data) {
      return;
    }
    st.window = chooseWindow();
    body.dataset.view = st.view;
    body.dataset.window = st.window;
    syncUrl();
    renderNav();
    var main = document.getElementById('view');
    var view;
    if (!st.window) {
      view = h('p', { class: 'placeholder', text: 'No windowed series yet: the engine has not exported any.' });
    } else if (st.view === 'growth') {
      view = growthView(st.window);
    } else if (st.view === 'retention') {
      view = retentionView(st.window);
    } else {
      view = supportView(st.window);
    }
    main.replaceChildren(view);
    health();
    var asOf = document.getElementById('as-of');
    var clock = st.data.raw.clock_seconds;
    asOf.textContent = finite(clock)
      ? 'T = ' + new Date(clock * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
      : 'no events yet (T not set)';
  }

  function setStatus(text, cls) {
    var s = document.getElementById('status');
    s.textContent = text;
    s.className = cls || '';
  }

  function onData(d) {
    var x = indexData(d);
    st.prev = st.data;
    st.data = x;
    x.values.forEach(function (v, k) {
      if (k.indexOf('_bucket{') < 0) {
        remember(k, v);
      }
    });
    render();
    setStatus('', '');
    body.dataset.state = 'ok';
  }

  function onError(e) {
    var msg = 'Cannot load api/series: ' + (e && e.message ? e.message : String(e));
    setStatus(msg + (st.data ? ' (showing the last answer)' : ''), 'error');
    body.dataset.state = 'error';
    if (!st.data) {
      document.getElementById('view').replaceChildren(h('p', { class: 'placeholder error', text: msg }));
    }
  }

  function countError(e) {
    body.dataset.errors = String((parseInt(body.dataset.errors, 10) || 0) + 1);
    if (window.console) {
      window.console.error(e);
    }
  }

  function schedule() {
    window.clearTimeout(st.timer);
    st.timer = window.setTimeout(refresh, refreshSeconds * 1000);
  }

  function refresh() {
    window.fetch('api/series', { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) {
          return r.text().then(function (t) {
            throw new Error('HTTP ' + r.status + (t ? ': ' + t.trim().slice(0, 200) : ''));
          });
        }
        return r.json();
      })
      .then(function (d) {
        try {
          onData(d);
        } catch (e) {
          // A bug of this page: counted as an error, and said.
          countError(e);
          onError(e);
        }
      }, onError)
      .then(schedule, schedule);
  }

  document.getElementById('nav').addEventListener('click', function (ev) {
    var a = ev.target.closest('a[data-view]');
    if (!a) {
      return;
    }
    ev.preventDefault();
    st.view = a.dataset.view;
    render();
  });
  document.getElementById('window').addEventListener('change', function (ev) {
    st.window = ev.target.value;
    render();
  });

  refresh();
})();
