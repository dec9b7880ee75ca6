//! Compatibility with real MedTech mappings and payloads: the Azure Health Data
//! Services workshop (Challenge 09) and the iomt-fhir unit-test payloads, copied
//! into tests/data/medtech/ (see its README for sources and the one fix made).

use chrono::{TimeZone, Utc};
use iomt_edge::medtech::{ids, DeviceMapping, FhirMapping, IdentityMode, MedTech, PreviewOptions, SkipKind};
use serde_json::{json, Value};

fn data(name: &str) -> String {
    let p = format!("{}/tests/data/medtech/{name}", env!("CARGO_MANIFEST_DIR"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    s.trim_start_matches('\u{feff}').to_string()
}

fn json_data(name: &str) -> Value {
    serde_json::from_str(&data(name)).unwrap()
}

fn opts() -> PreviewOptions {
    PreviewOptions {
        identity: IdentityMode::Create,
        ingestion_time: Some(Utc.with_ymd_and_hms(2020, 11, 5, 0, 0, 0).unwrap()),
        issued: Some(Utc.with_ymd_and_hms(2020, 11, 5, 0, 0, 0).unwrap()),
        ..Default::default()
    }
}

fn workshop() -> MedTech {
    MedTech::new(&data("ahds-workshop-ch09-devicecontent.json"), &data("ahds-workshop-ch09-fhirmapping.json")).unwrap()
}

#[test]
fn workshop_mappings_load_unchanged() {
    let m = workshop();
    assert_eq!(m.device.templates.len(), 10);
    assert_eq!(m.fhir.templates.len(), 9);
    // The published sample file is not JSON (trailing comma in VITALS).
    let raw = data("ahds-workshop-ch09-Three-Sample-Message-Types.txt");
    let vitals = raw.split("==").find(|p| p.contains("VITALS\"")).unwrap();
    assert!(serde_json::from_str::<Value>(vitals.trim()).is_err());
}

#[test]
fn workshop_messages_give_the_services_observations() {
    let m = workshop();
    let msgs = json_data("ahds-workshop-ch09-messages.fixed.json");
    let msgs = msgs.as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    let p = m.preview(msgs, &opts());

    // Normalization: 7 from VITALS, 2 from BP, 1 from WEIGHT.
    let types: Vec<&str> = p.measurements.iter().map(|m| m.type_name.as_str()).collect();
    assert_eq!(
        types,
        [
            "heartrate",
            "Spo2",
            "BloodPerfusion",
            "Steps",
            "BloodPulseWave",
            "RespirationRate",
            "SkinTemp",
            "BloodPressureDiastolic",
            "BloodPressureSystolic",
            "Weight"
        ]
    );
    let mj = serde_json::to_value(&p.measurements).unwrap();
    assert_eq!(
        mj[0],
        json!({"Type": "heartrate", "OccurrenceTimeUtc": "2020-10-22T01:34:56Z", "IngestionTimeUtc": "2020-11-05T00:00:00Z",
               "DeviceId": "MSFT00001", "PatientId": "PatientMary", "EncounterId": null, "CorrelationId": null,
               "Properties": [{"Name": "heartRate", "Value": "80"}]})
    );
    assert_eq!(mj[2]["Properties"][0]["Value"], "1.1399999856948853");
    assert_eq!(mj[7]["Properties"][0], json!({"Name": "diastolic", "Value": "100"}));
    assert_eq!(mj[9]["DeviceId"], "MSFT00003WT");

    // BloodPulseWave has no FHIR template: dropped, and said so.
    assert_eq!(p.skipped.len(), 1, "{:#?}", p.skipped);
    assert_eq!(p.skipped[0].kind, SkipKind::NoFhirTemplate);
    assert_eq!(p.skipped[0].type_name.as_deref(), Some("BloodPulseWave"));

    assert_eq!(p.observations.len(), 9);
    let hr = &p.observations[0];
    let pat = ids::patient_resource_id("PatientMary");
    let dev = ids::device_resource_id(None, "MSFT00001");
    assert_eq!(hr["id"], "3a136fc48d9a84fd9922ca28c6b834109e5848d4043392e55d9257c67e0cb347");
    assert_eq!(hr["identifier"][0]["value"], format!("{pat}.{dev}.heartrate.20201022010000Z.20201022015959Z"));
    assert_eq!(hr["identifier"][0]["system"], ids::SERVICE_SYSTEM);
    assert_eq!(hr["status"], "final");
    assert_eq!(hr["subject"]["reference"], format!("Patient/{pat}"));
    assert_eq!(hr["device"]["reference"], format!("Device/{dev}"));
    assert_eq!(hr["effectivePeriod"], json!({"start": "2020-10-22T01:00:00.0000000Z", "end": "2020-10-22T01:59:59.9999999Z"}));
    assert_eq!(
        hr["code"],
        json!({"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                          {"system": ids::SERVICE_SYSTEM, "code": "heartrate", "display": "heartrate"}],
               "text": "heartrate"})
    );
    assert_eq!(hr["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(hr["category"][0]["text"], "Vital Signs");
    let sd = &hr["valueSampledData"];
    assert_eq!(sd["origin"], json!({"value": 0, "unit": "Bpm"}));
    assert_eq!(sd["period"], 5000);
    assert_eq!(sd["dimensions"], 1);
    let toks: Vec<&str> = sd["data"].as_str().unwrap().split(' ').collect();
    assert_eq!(toks.len(), 720);
    // 01:34:56 is 2096 s into the hour: slot 419 of 5 s.
    assert_eq!(toks[419], "80");
    assert_eq!(toks.iter().filter(|t| **t != "E").count(), 1);

    // The BP device gets its own Device id; systolic keeps both of its codings.
    let sys = p.observations.iter().find(|o| o["code"]["text"] == "BloodPressureSystolic").unwrap();
    assert_eq!(sys["device"]["reference"], format!("Device/{}", ids::device_resource_id(None, "MSFT00002BP")));
    assert_eq!(sys["code"]["coding"].as_array().unwrap().len(), 3);
    assert_eq!(sys["effectivePeriod"]["start"], "2020-11-04T08:00:00.0000000Z");
}

#[test]
fn worked_id_example_from_the_reference() {
    let p = ids::patient_resource_id("PatientMary");
    let d = ids::device_resource_id(None, "MSFT00001");
    assert!(p.starts_with("7fff4549") && p.ends_with("0bc2b"), "{p}");
    assert!(d.starts_with("da8b209a") && d.ends_with("ea10f"), "{d}");
    assert_eq!(p, "7fff454973df0f15316aa9e5a21d1c00cf341658ea459da28db254f442d0bc2b");
    assert_eq!(d, "da8b209ab17794198b77c4871e48b6f2e85a0b08d6cd71937d73087e80dea10f");
    let v = ids::observation_identifier(&p, &d, "heartrate", "20201022010000Z.20201022015959Z");
    let o = ids::observation_id(&v);
    assert!(o.starts_with("3a136fc4") && o.ends_with("cb347"), "{o}");
}

#[test]
fn lookup_mode_does_not_invent_ids() {
    let m = workshop();
    let msgs = json_data("ahds-workshop-ch09-messages.fixed.json");
    let p = m.preview(msgs.as_array().unwrap(), &PreviewOptions { identity: IdentityMode::Lookup, ..opts() });
    assert_eq!(p.observations.len(), 9);
    assert!(p.observations[0].get("id").is_none());
    assert_eq!(p.observations[0]["device"]["reference"], "Device?identifier=MSFT00001");
}

const IOT_HUB_MAPPING: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "IotJsonPathContent", "template": {"typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartrate)]",
    "patientIdExpression": "$.SystemProperties.iothub-connection-device-id",
    "values": [{"required": "true", "valueExpression": "$.Body.heartrate", "valueName": "hr"}]}},
  {"templateType": "IotJsonPathContentTemplate", "template": {"typeName": "bloodpressure", "typeMatchExpression": "$..[?(@Body.systolic && @Body.diastolic)]",
    "values": [{"required": "true", "valueExpression": "$.Body.systolic", "valueName": "systolic"},
               {"required": "true", "valueExpression": "$.Body.diastolic", "valueName": "diastolic"}]}}]}"#;

const EMPTY_FHIR: &str = r#"{"templateType": "CollectionFhir", "template": []}"#;

fn normalize(device_mapping: &str, envelope: Value) -> iomt_edge::medtech::Preview {
    let m = MedTech::new(device_mapping, EMPTY_FHIR).unwrap();
    m.preview(&[envelope], &PreviewOptions { inputs_are_envelopes: true, ..opts() })
}

#[test]
fn iot_hub_payloads_normalize_as_documented() {
    let p = normalize(IOT_HUB_MAPPING, json_data("iomt-fhir-test-data_IotHubPayloadExample.json"));
    assert_eq!(p.measurements.len(), 1);
    let m = serde_json::to_value(&p.measurements[0]).unwrap();
    assert_eq!(m["Type"], "heartrate");
    assert_eq!(m["DeviceId"], "ev-d795-1d04-55ae");
    assert_eq!(m["PatientId"], "ev-d795-1d04-55ae");
    assert_eq!(m["OccurrenceTimeUtc"], "2019-01-30T22:45:02.6073744Z");
    assert_eq!(m["Properties"], json!([{"Name": "hr", "Value": "203"}]));

    // Without iothub-creation-time-utc the enqueued time is used.
    let p = normalize(IOT_HUB_MAPPING, json_data("iomt-fhir-test-data_IotHubPayloadExampleMissingCreateTime.json"));
    assert_eq!(serde_json::to_value(&p.measurements[0]).unwrap()["OccurrenceTimeUtc"], "2019-02-01T22:46:01.875Z");

    let p = normalize(IOT_HUB_MAPPING, json_data("iomt-fhir-test-data_IotHubPayloadMultiValueExample.json"));
    assert_eq!(p.measurements.len(), 1);
    assert_eq!(p.measurements[0].type_name, "bloodpressure");
    assert_eq!(p.measurements[0].properties, vec![("systolic".to_string(), "111".to_string()), ("diastolic".to_string(), "75".to_string())]);
    // Only the FHIR stage drops it: no patient id for Create mode (this test's FHIR mapping is empty, too).
    assert_eq!(p.skipped.len(), 1, "{:#?}", p.skipped);
    assert_eq!(p.skipped[0].kind, SkipKind::PatientIdMissing);
}

#[test]
fn iot_central_payload_normalizes_as_documented() {
    let mapping = r#"{"templateType": "CollectionContent", "template": [
      {"templateType": "IotCentralJsonPathContent", "template": {"typeName": "RespiratoryRate", "typeMatchExpression": "$..[?(@telemetry.RespiratoryRate)]",
        "values": [{"required": "true", "valueExpression": "$.telemetry.RespiratoryRate", "valueName": "respiratoryrate"}]}},
      {"templateType": "IotCentralJsonPathContent", "template": {"typeName": "BloodPressure", "typeMatchExpression": "$..[?(@telemetry.BloodPressure.Diastolic && @telemetry.BloodPressure.Systolic)]",
        "values": [{"required": "true", "valueExpression": "$.telemetry.BloodPressure.Diastolic", "valueName": "bp_diastolic"},
                   {"required": "true", "valueExpression": "$.telemetry.BloodPressure.Systolic", "valueName": "bp_systolic"}]}}]}"#;
    let payload = json_data("iomt-fhir-test-data_IotCentralPayloadExample.json");
    // As the Event Hubs body (wrapped), which is how the service sees it.
    let m = MedTech::new(mapping, EMPTY_FHIR).unwrap();
    let p = m.preview(&[payload], &opts());
    assert_eq!(p.measurements.len(), 2, "{:#?}", p.skipped);
    let rr = serde_json::to_value(&p.measurements[0]).unwrap();
    assert_eq!(rr["DeviceId"], "1vzb5ghlsg1");
    assert_eq!(rr["OccurrenceTimeUtc"], "2020-08-05T22:26:55.455Z");
    assert_eq!(rr["Properties"], json!([{"Name": "respiratoryrate", "Value": "13"}]));
    assert_eq!(p.measurements[1].properties[1], ("bp_systolic".to_string(), "71".to_string()));
}

#[test]
fn calculated_content_jsonpath_and_jmespath() {
    let mapping = r#"{"templateType": "CollectionContent", "template": [
      {"templateType": "CalculatedContent", "template": {"typeName": "bloodpressure",
        "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
        "deviceIdExpression": "$.matchedToken.deviceId", "timestampExpression": "$.matchedToken.endDate",
        "values": [{"required": "true", "valueExpression": "$.matchedToken.systolic", "valueName": "systolic"},
                   {"required": "true", "valueExpression": "$.matchedToken.diastolic", "valueName": "diastolic"}]}}]}"#;
    let p = normalize(mapping, json_data("iomt-fhir-test-data_Documentation_CalculatedFunction_BloodPressure_Payload.json"));
    assert_eq!(p.measurements.len(), 1);
    let m = serde_json::to_value(&p.measurements[0]).unwrap();
    assert_eq!(m["DeviceId"], "device123");
    assert_eq!(m["OccurrenceTimeUtc"], "2019-02-01T22:46:01.875Z");
    assert_eq!(m["Properties"], json!([{"Name": "systolic", "Value": "123"}, {"Name": "diastolic", "Value": "87"}]));

    // JMESPath type match over the array body; values computed with custom functions.
    let jmes = r#"{"templateType": "CollectionContent", "template": [
      {"templateType": "CalculatedContent", "template": {"typeName": "heartrate", "defaultExpressionLanguage": "JmesPath",
        "typeMatchExpression": "Body[?heartRate]",
        "deviceIdExpression": "matchedToken.deviceId",
        "timestampExpression": {"value": "$.matchedToken.endDate", "language": "JsonPath"},
        "values": [{"required": "true", "valueExpression": "add(to_number(matchedToken.heartRate), `1`)", "valueName": "hrPlusOne"}]}}]}"#;
    let p = normalize(jmes, json_data("iomt-fhir-test-data_Documentation_CalculatedFunction_MultipleMeasurements_FromArray_Payload.json"));
    let vals: Vec<&str> = p.measurements.iter().map(|m| m.properties[0].1.as_str()).collect();
    assert_eq!(vals, ["79", "82", "73"]);
    let times: Vec<String> =
        p.measurements.iter().map(|m| serde_json::to_value(m).unwrap()["OccurrenceTimeUtc"].as_str().unwrap().to_string()).collect();
    assert_eq!(times, ["2019-02-01T20:46:01.875Z", "2019-02-01T21:46:01.875Z", "2019-02-01T22:46:01.875Z"]);

    // The same payload with a JSONPath scan: three matches, one per element.
    let scan = mapping.replace("@systolic && @diastolic", "@heartRate").replace("systolic\"}", "x\"}");
    let m2 = MedTech::new(
        &scan
            .replace(
                r#"{"required": "true", "valueExpression": "$.matchedToken.diastolic", "valueName": "diastolic"}"#,
                r#"{"required": "false", "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}"#,
            )
            .replace(r#"{"required": "true", "valueExpression": "$.matchedToken.systolic", "valueName": "x"},"#, ""),
        EMPTY_FHIR,
    )
    .unwrap();
    let p = m2.preview(
        &[json_data("iomt-fhir-test-data_Documentation_CalculatedFunction_MultipleMeasurements_FromArray_Payload.json")],
        &PreviewOptions { inputs_are_envelopes: true, ..opts() },
    );
    assert_eq!(p.measurements.len(), 3, "{:#?}", p.skipped);
}

#[test]
fn several_tokens_and_missing_values_are_reported() {
    let payload = json_data("iomt-fhir-test-data_Documentation_CalculatedFunction_MultipleMeasurements_FromArray_Payload.json");
    // `$..deviceId` on the envelope + matchedToken finds 4 device ids: SelectToken fails.
    let several = r#"{"templateType": "CollectionContent", "template": [
      {"templateType": "CalculatedContent", "template": {"typeName": "hr", "typeMatchExpression": "$..[?(@heartRate)]",
        "deviceIdExpression": "$..deviceId", "timestampExpression": "$.matchedToken.endDate",
        "values": [{"required": true, "valueExpression": "$.matchedToken.heartRate", "valueName": "hr"}]}},
      {"templateType": "CalculatedContent", "template": {"typeName": "never", "typeMatchExpression": "$.Body",
        "deviceIdExpression": "$.x", "timestampExpression": "$.y", "values": []}}]}"#;
    let p = normalize(several, payload.clone());
    assert!(p.measurements.is_empty());
    assert_eq!(p.skipped[0].kind, SkipKind::SeveralTokens);
    assert!(p.skipped[0].reason.contains("matched 4 tokens"), "{}", p.skipped[0].reason);
    assert_eq!(p.skipped[1].kind, SkipKind::TemplatesNotRun);

    let missing = several.replace("$..deviceId", "$.matchedToken.deviceId").replace("$.matchedToken.heartRate", "$.matchedToken.nope");
    let p = normalize(&missing, payload.clone());
    assert_eq!(p.skipped[0].kind, SkipKind::RequiredValueMissing);
    assert!(p.skipped[0].reason.contains("\"hr\""));

    let nothing = several.replace("@heartRate", "@nothing").replace("\"$.Body\"", "\"$.Nobody\"");
    let p = normalize(&nothing, payload);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].kind, SkipKind::NoTemplateMatched);
}

#[test]
fn unknown_fields_and_duplicate_types_are_rejected_with_their_path() {
    let bad = data("ahds-workshop-ch09-devicecontent.json").replacen("\"valueExpression\": \"$.spo2\"", "\"valueExpresion\": \"$.spo2\"", 1);
    let e = DeviceMapping::parse(&bad).unwrap_err();
    assert_eq!(e.path, "template[1].template.values[0].valueExpresion", "{e}");

    let bad = data("ahds-workshop-ch09-fhirmapping.json").replacen("\"typeName\": \"RespirationRate\"", "\"typeName\": \"HEARTRATE\"", 1);
    let e = FhirMapping::parse(&bad).unwrap_err();
    assert_eq!(e.path, "template[1].template.typeName", "{e}");
    assert!(e.message.contains("duplicate"));

    let bad = data("ahds-workshop-ch09-fhirmapping.json").replacen("\"periodInterval\": 60", "\"periodInterval\": 30", 1);
    assert_eq!(FhirMapping::parse(&bad).unwrap_err().path, "template[0].template.periodInterval");
    let bad = data("ahds-workshop-ch09-fhirmapping.json").replacen("\"unit\": \"Bpm\"", "\"unit\": \"Bpm\", \"units\": 1", 1);
    assert_eq!(FhirMapping::parse(&bad).unwrap_err().path, "template[0].template.value.units");
}

#[test]
fn iomt_fhir_basic_sample_mappings_with_codeable_concept_and_components() {
    let m = MedTech::new(&data("iomt-fhir-sample-basic-devicecontent.json"), &data("iomt-fhir-sample-basic-fhirmapping.json")).unwrap();
    let msgs = vec![
        json!({"deviceid": "d1", "patientid": "p1", "measurementdatetime": "2022-07-01T12:00:00Z", "systolic": 120, "diastolic": 80}),
        json!({"deviceid": "d1", "patientid": "p1", "measurementdatetime": "2022-07-01T12:00:05Z", "deviceWorn": true}),
        json!({"deviceid": "d1", "patientid": "p1", "measurementdatetime": "2022-07-01T12:00:01Z", "heartrate": 70}),
        json!({"deviceid": "d1", "patientid": "p1", "measurementdatetime": "2022-07-01T12:00:02Z", "heartrate": 71}),
    ];
    let p = m.preview(&msgs, &opts());
    assert!(p.skipped.is_empty(), "{:#?}", p.skipped);
    let bp = p.observations.iter().find(|o| o["code"]["text"] == "bloodpressure").unwrap();
    let comps = bp["component"].as_array().unwrap();
    assert_eq!(comps.len(), 2);
    assert_eq!(comps[0]["code"]["text"], "diastolic");
    assert_eq!(comps[0]["code"]["coding"][1]["code"], "diastolic");
    assert_eq!(comps[0]["valueSampledData"]["period"], 1000);
    let worn = p.observations.iter().find(|o| o["code"]["text"] == "deviceWorn").unwrap();
    assert_eq!(worn["valueCodeableConcept"]["text"], "Device Worn");
    assert_eq!(worn["effectivePeriod"]["start"], worn["effectivePeriod"]["end"]);
    let hr = p.observations.iter().find(|o| o["code"]["text"] == "heartrate").unwrap();
    let toks: Vec<&str> = hr["valueSampledData"]["data"].as_str().unwrap().split(' ').collect();
    assert_eq!(toks.len(), 3600);
    assert_eq!(&toks[..3], &["E", "70", "71"]);
}

#[test]
fn quantity_with_several_values_per_group_is_dropped() {
    let dev = r#"{"templateType": "CollectionContent", "template": [{"templateType": "JsonPathContent", "template": {
        "typeName": "hr", "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.d", "patientIdExpression": "$.p",
        "encounterIdExpression": "$.e", "correlationIdExpression": "$.c", "timestampExpression": "$.t",
        "values": [{"valueName": "hr", "valueExpression": "$.hr", "required": true}]}}]}"#;
    let fhir = |period: i32, vt: &str| {
        format!(
            r#"{{"templateType": "CollectionFhir", "template": [{{"templateType": "CodeValueFhir", "template": {{"typeName": "hr",
            "periodInterval": {period}, "codes": [{{"code": "8867-4", "system": "http://loinc.org"}}],
            "value": {{"valueType": "{vt}", "valueName": "hr"{unit}}}}}}}]}}"#,
            unit = if vt == "Quantity" { r#", "unit": "/min""# } else { "" }
        )
    };
    let msgs = vec![
        json!({"d": "d", "p": "p", "e": "e", "c": "c1", "t": "2022-07-01T12:00:00Z", "hr": 60}),
        json!({"d": "d", "p": "p", "e": "e", "c": "c1", "t": "2022-07-01T12:30:00Z", "hr": 61}),
        json!({"d": "d", "p": "p", "e": "e", "c": "c2", "t": "2022-07-01T12:40:00Z", "hr": 62}),
    ];
    // Hourly Quantity: c1 has two values in the hour -> dropped; c2 has one.
    let p = MedTech::new(dev, &fhir(60, "Quantity")).unwrap().preview(&msgs, &opts());
    assert_eq!(p.observations.len(), 1);
    assert_eq!(p.observations[0]["valueQuantity"]["value"], 62);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].kind, SkipKind::SeveralValuesInGroup);
    // Instance: one Observation each.
    let p = MedTech::new(dev, &fhir(0, "Quantity")).unwrap().preview(&msgs, &opts());
    assert_eq!(p.observations.len(), 3);
    // By correlation id: c1 spans 12:00..12:30, identifier ends with the correlation id.
    let p = MedTech::new(dev, &fhir(-1, "String")).unwrap().preview(&msgs, &opts());
    assert_eq!(p.observations.len(), 1, "{:#?}", p.skipped);
    assert!(p.observations[0]["identifier"][0]["value"].as_str().unwrap().ends_with(".hr.c2"));
    assert_eq!(p.skipped[0].kind, SkipKind::SeveralValuesInGroup);
    // Daily.
    let p = MedTech::new(dev, &fhir(1440, "String")).unwrap().preview(&msgs[2..], &opts());
    assert_eq!(p.observations[0]["effectivePeriod"]["end"], "2022-07-01T23:59:59.9999999Z");
    assert_eq!(p.observations[0]["valueString"], "62");
    // Create mode without a patient id.
    let nopat = vec![json!({"d": "d", "c": "c", "t": "2022-07-01T12:00:00Z", "hr": 60})];
    let p = MedTech::new(dev, &fhir(0, "Quantity")).unwrap().preview(&nopat, &opts());
    assert_eq!(p.skipped[0].kind, SkipKind::PatientIdMissing);
    // Correlation id expression set but value absent: required.
    let nocorr = vec![json!({"d": "d", "p": "p", "t": "2022-07-01T12:00:00Z", "hr": 60})];
    let p = MedTech::new(dev, &fhir(-1, "Quantity")).unwrap().preview(&nocorr, &opts());
    assert_eq!(p.skipped[0].kind, SkipKind::RequiredValueMissing);
}
